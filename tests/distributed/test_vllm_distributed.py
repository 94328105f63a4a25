"""``backend: vllm`` under ``accelerate launch`` with 2 CPU processes: each rank runs its own in-process engine on the
launcher's process group (vLLM's ``external_launcher``), the E-step shards the examples across ranks and gathers
exactly the samples one process draws, and the round finishes (M-step under DDP next to the engines, adapter loaded
into them, evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FAST_OVERRIDES, SMOKE_RECIPE, failure, launch, run_fem, samples

pytestmark = [pytest.mark.distributed, pytest.mark.vllm]


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory) -> tuple[list[str], dict]:
    """Recipe overrides for a 1-round vLLM run of the smoke recipe on a tiny model vLLM's CPU attention accepts."""
    pytest.importorskip("vllm")
    from fem.testing.tiny import save_tiny_model

    model = save_tiny_model(tmp_path_factory.mktemp("tiny_vllm"), hidden_size=128)
    overrides = [
        *FAST_OVERRIDES,
        "--rounds",
        "1",
        "--backend",
        "vllm",
        "--model_name_or_path",
        str(model),
        "--vllm_max_model_len",
        "512",
        "--vllm_kv_cache_gib",
        "0.05",
    ]
    return overrides, {"FEM_CACHE": str(tmp_path_factory.mktemp("fem_cache"))}


def test_two_process_estep_on_vllm_draws_the_single_process_samples(tmp_path, vllm_run):
    overrides, env = vllm_run
    single = tmp_path / "single"
    result = run_fem(
        "train",
        "--config",
        SMOKE_RECIPE,
        "--output_dir",
        str(single),
        *overrides,
        "--per_device_train_batch_size",
        "8",
        env=env,
    )
    assert result.returncode == 0, failure(result)
    two = tmp_path / "two"
    result = launch("cpu_ddp.yaml", two, env, extra=overrides)
    assert result.returncode == 0, failure(result)
    metrics = json.loads((two / "round_000" / "metrics.json").read_text())
    assert metrics["estep/num_processes"] == 2 and metrics["mstep/num_processes"] == 2
    assert samples(two, 0) == samples(single, 0) and len(samples(two, 0)) > 0
    assert (Path(two) / "round_000" / "adapter" / "adapter_config.json").is_file()
    assert "eval/accuracy" in metrics
