"""Slower vLLM checks, each with its own engine: the embedded SmolLM2 (its GGUF de-quantised to a cached HF folder)
gives the hf backend's statistics; an engine in vLLM's own process (``in_process=False``) gives the same statistics
through ``collective_rpc`` as the in-process one."""

from __future__ import annotations

import os

import pytest
import torch

from fem.generation.base import SamplingParams
from fem.proposals.power import rescore

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOL = 1e-3


def _check_against_hf(backend, hf, prompts, params, n=12):
    conts, _ = backend.generate(prompts, params, n, generator=torch.Generator().manual_seed(0))
    for prompt, cont in zip(prompts, conts):
        ref = rescore(hf, prompt, cont.token_ids, params)
        for name in ("logp", "logq", "entropy"):
            assert getattr(cont, name) == pytest.approx(getattr(ref, name), abs=TOL), name
    return conts


def test_smollm2_from_its_gguf(tmp_path, monkeypatch):
    pytest.importorskip("vllm")
    from fem.generation.hf import HFBackend
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions
    from fem.models import SMOLLM2_ALIAS, hf_model_dir, load_model, load_model_and_tokenizer

    monkeypatch.setenv("FEM_CACHE", str(tmp_path))
    model, tokenizer = load_model_and_tokenizer(SMOLLM2_ALIAS)
    folder = hf_model_dir(SMOLLM2_ALIAS, None, model, tokenizer)
    assert folder.startswith(str(tmp_path)) and os.path.isfile(os.path.join(folder, "config.json"))
    stamp = os.path.getmtime(os.path.join(folder, "config.json"))
    assert hf_model_dir(SMOLLM2_ALIAS, None, model, tokenizer) == folder  # cached: not written again
    assert os.path.getmtime(os.path.join(folder, "config.json")) == stamp
    exported = load_model(folder)
    for (name, a), (_, b) in zip(model.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name
    del exported
    hf = HFBackend(model, tokenizer)
    backend = VLLMBackend(
        model, tokenizer, model_dir=folder, options=EngineOptions(max_model_len=512, kv_cache_gib=0.25)
    )
    try:
        from fem.tasks.prompting import render_prompt

        prompts = [render_prompt(tokenizer, [{"role": "user", "content": "What is 12 times 7? Think step by step."}])]
        _check_against_hf(backend, hf, prompts, SamplingParams(temperature=0.25))
        _check_against_hf(backend, hf, prompts, SamplingParams(temperature=0.7, top_k=20, top_p=0.9))
    finally:
        backend.close()


def test_engine_in_its_own_process_gives_the_same_statistics(vllm_model_dir, hf_ref):
    pytest.importorskip("vllm")
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions

    options = EngineOptions(max_model_len=256, kv_cache_gib=0.0625, enable_lora=False, in_process=False)
    backend = VLLMBackend(hf_ref.model, hf_ref.tokenizer, model_dir=str(vllm_model_dir), options=options)
    try:
        prompts = [hf_ref.encode("Question: what is 2 + 3?"), hf_ref.encode("Verdict: A")]
        conts = _check_against_hf(backend, hf_ref, prompts, SamplingParams(temperature=0.25, top_k=5))

        def stop_at_two(row, cont):
            assert len(cont.logp) == len(cont.entropy) == len(cont.token_ids)
            return len(cont.token_ids) >= 2

        stopped, _ = backend.generate(
            prompts,
            SamplingParams(temperature=0.25, top_k=5),
            12,
            generator=torch.Generator().manual_seed(0),
            stop_callback=stop_at_two,
        )
        for a, b in zip(stopped, conts):
            assert a.token_ids == b.token_ids[:2] and a.logp == pytest.approx(b.logp[:2], abs=1e-6)
    finally:
        backend.close()
