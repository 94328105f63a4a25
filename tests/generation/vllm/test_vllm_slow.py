"""Slower vLLM checks, each with its own engine in vLLM's own process (the session's engine is the in-process one):
the embedded SmolLM2 (its GGUF de-quantised to a cached HF folder) gives the hf backend's statistics; an engine in
its own process gives the same statistics through ``collective_rpc`` as the in-process one, and stops rows exactly
where the callback says; ``fem train`` with backend: vllm evaluates each round with that round's adapter."""

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
    options = EngineOptions(
        max_model_len=512, kv_cache_gib=0.25, in_process=False
    )  # the session has the in-process one
    backend = VLLMBackend(model, tokenizer, model_dir=folder, options=options)
    try:
        from fem.drawing import render_prompt

        prompts = [render_prompt(tokenizer, [{"role": "user", "content": "What is 12 times 7? Think step by step."}])]
        _check_against_hf(backend, hf, prompts, SamplingParams(temperature=0.25))
        _check_against_hf(backend, hf, prompts, SamplingParams(temperature=0.7, top_k=20, top_p=0.9))
    finally:
        backend.close()


def test_engine_in_its_own_process_gives_the_same_statistics(vllm_model_dir, hf_ref):
    pytest.importorskip("vllm")
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions

    options = EngineOptions(max_model_len=256, kv_cache_gib=0.0625, adapter_mode="merge", in_process=False)
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


def test_em_loop_on_vllm_evaluates_each_round_with_its_adapter(tmp_path, vllm_model_dir):
    """``fem train`` with backend: vllm (2 rounds: E-step, in-process M-step, adapter swap, eval). Each evaluation's
    forced read-out probabilities are recomputed with the hf backend and that round's adapter (none for the base)."""
    import json

    from helpers import FAST_OVERRIDES, SMOKE_RECIPE, run_fem

    pytest.importorskip("vllm")
    from fem.drawing import render_prompt
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer
    from fem.readout import score_completions
    from fem.recipe import parse_configs
    from fem.tasks import build_task

    out = tmp_path / "run"
    args = ["--config", SMOKE_RECIPE, "--output_dir", str(out), "--model_name_or_path", str(vllm_model_dir)]
    args += [*FAST_OVERRIDES, "--backend", "vllm", "--vllm_kv_cache_gib", "0.125"]
    result = run_fem("train", *args, env={"FEM_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    configs = parse_configs(args)
    task = build_task(configs.task)
    examples = {e.id: e for e in task.load("eval")}
    hf = HFBackend(*load_model_and_tokenizer(str(vllm_model_dir)))
    for folder, adapter in (("baseline", None), ("round_000/eval", "round_000"), ("round_001/eval", "round_001")):
        hf.unload_adapter()
        if adapter:
            hf.load_adapter(str(out / adapter / "adapter"))
        preds = [json.loads(line) for line in (out / folder / "predictions.jsonl").read_text().splitlines()]
        assert preds
        rows = [examples[p["example_id"]] for p in preds]
        prompts = [render_prompt(hf.tokenizer, task.prompt(e)) for e in rows]
        again = score_completions(task, hf, rows, [p["completion"] for p in preds], "forced", prompt_ids=prompts)
        for pred, ref in zip(preds, again):
            assert pred["info"]["option_probs"] == pytest.approx(ref.info["option_probs"], abs=1e-3), folder
