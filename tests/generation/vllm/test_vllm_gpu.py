"""The vLLM backend on a CUDA GPU (the official ``vllm`` wheel, which ``make install`` picks where ``nvidia-smi`` sees a
GPU): the session engine runs on the GPU, and its draws obey the statistics contract against the ``hf`` reference on
CPU (fp32). Skipped without a GPU (``make test-gpu`` runs the ``gpu`` tests)."""

from __future__ import annotations

import pytest
import torch
from test_vllm_statistics import SETTINGS, _max_gaps

pytestmark = [pytest.mark.vllm, pytest.mark.gpu]

GPU_TOL = 2e-3  # fp32 on a GPU: different kernels (and reduction orders) than the CPU reference


@pytest.fixture()
def on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


def test_engine_runs_on_the_gpu(on_gpu, vllm_backend):
    from vllm.platforms import current_platform

    assert current_platform.is_cuda_alike()
    assert vllm_backend.engine.model_config.dtype == torch.float32


@pytest.mark.parametrize("params", SETTINGS, ids=str)
def test_statistics_on_the_gpu_match_hf(on_gpu, vllm_backend, hf_ref, prompts, params):
    conts, stats = vllm_backend.generate(prompts, params, 16, generator=torch.Generator().manual_seed(0))
    assert stats.tokens_decoded > 0
    gaps = _max_gaps(hf_ref, prompts, conts, params)
    assert max(gaps.values()) < GPU_TOL, gaps


def test_scoring_and_readout_on_the_gpu_match_hf(on_gpu, vllm_backend, hf_ref, prompts):
    conts, _ = vllm_backend.generate(prompts, SETTINGS[0], 8, generator=torch.Generator().manual_seed(1))
    tokens = [c.token_ids for c in conts]
    for ours, ref in zip(vllm_backend.score(prompts, tokens), hf_ref.score(prompts, tokens)):
        assert ours == pytest.approx(ref, abs=GPU_TOL)
    assert (vllm_backend.next_token_logprobs(prompts) - hf_ref.next_token_logprobs(prompts)).abs().max() < GPU_TOL


def test_compiled_engine_with_cuda_graphs_matches_hf_with_a_merged_adapter(
    on_gpu, vllm_model_dir, hf_ref, prompts, tmp_path
):
    """The GPU recipes' engine (``vllm_enforce_eager: false``: torch.compile and CUDA graphs), in its own process:
    statistics and a merged adapter's read-out against the ``hf`` reference."""
    from test_vllm_adapters import _write_adapter

    from fem.generation.hf import HFBackend
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions
    from fem.models import load_model_and_tokenizer

    options = EngineOptions(max_model_len=512, enforce_eager=False, in_process=False)
    backend = VLLMBackend(hf_ref.model, hf_ref.tokenizer, model_dir=str(vllm_model_dir), options=options)
    try:
        conts, _ = backend.generate(prompts, SETTINGS[0], 16, generator=torch.Generator().manual_seed(0))
        assert max(_max_gaps(hf_ref, prompts, conts, SETTINGS[0]).values()) < GPU_TOL
        adapter = _write_adapter(vllm_model_dir, tmp_path / "adapter", seed=1)
        backend.load_adapter(adapter)
        hf = HFBackend(*load_model_and_tokenizer(str(vllm_model_dir)))
        hf.load_adapter(adapter)
        assert (backend.next_token_logprobs(prompts) - hf.next_token_logprobs(prompts)).abs().max() < GPU_TOL
    finally:
        backend.close()
