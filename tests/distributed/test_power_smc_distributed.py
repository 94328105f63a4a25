"""power_smc under `accelerate launch` with 2 CPU processes: the E-step (one EM round) and ``fem eval`` shard their
chunks over the ranks and gather exactly what one process draws (chunk ``c`` and its seed do not depend on the world
size; a chunk's particle systems are decoded on one rank)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FAST_OVERRIDES, SMOKE_RECIPE, launch_fem, run_fem

SMC = ["--proposal", "power_smc", "--smc_particles", "4", "--rounds", "1", "--max_new_tokens", "3"]
EVAL = ["--proposals", "ancestral,power_smc", "--smc_particles", "4", "--eval_limit", "12", "--max_new_tokens", "3"]


def records(path: Path, fields: tuple[str, ...]) -> list[tuple]:
    """The records' ``fields`` (a trace without its wall time), sorted, as comparable JSON strings."""
    out = []
    for r in map(json.loads, path.open()):
        if "trace" in r:
            r["trace"]["cost"].pop("wall_s")
        out.append(tuple(json.dumps(r.get(f), sort_keys=True) for f in fields))
    return sorted(out)


@pytest.mark.distributed  # two train and two eval runs, half under a 2-process launch: 37 s quiet, 200 s at load 8
def test_power_smc_estep_and_eval_under_two_processes(tmp_path):
    env = {"FEM_CACHE": str(tmp_path / "fem_cache")}
    runs = {}
    for name, runner in (("single", run_fem), ("ddp", launch_fem)):
        out = tmp_path / name
        train = ["train", "--config", SMOKE_RECIPE, "--output_dir", str(out / "train"), *FAST_OVERRIDES, *SMC]
        ev = ["eval", "--config", SMOKE_RECIPE, "--output_dir", str(out / "eval_run"), *EVAL]
        for args in (train, ev):
            result = runner(*args, env=env)
            assert result.returncode == 0, f"{name} {args[0]}:\n" + result.stderr[-3000:]
        runs[name] = out
    single, ddp = (json.loads((runs[n] / "train" / "round_000" / "metrics.json").read_text()) for n in runs)
    assert ddp["estep/num_processes"] == 2
    # 24 examples x 2 samples, each drawn from a system of 4 particles of 3 tokens (2 draws share a system)
    assert ddp["estep/tokens_decoded"] == single["estep/tokens_decoded"] == 24 * 4 * 3
    # the E-step's kept power_smc samples: the same traces, rewards and particle records as one process draws
    fields = ("example_id", "attempt", "rationale", "reward", "trace")
    samples = [records(runs[n] / "train" / "round_000" / "samples.jsonl", fields) for n in runs]
    assert samples[0] == samples[1] and len(samples[0]) == single["estep/kept_samples"] > 0
    # fem eval with power_smc beside ancestral: the same predictions, each trace from a 4-particle system
    fields = ("proposal", "example_id", "sample_index", "completion", "extracted", "trace")
    preds = [records(runs[n] / "eval_run" / "eval" / "predictions.jsonl", fields) for n in runs]
    assert preds[0] == preds[1] and len(preds[0]) == 2 * 12
    smc = [json.loads(p[-1]) for p in preds[1] if json.loads(p[0]) == "power_smc"]
    assert len(smc) == 12 and all(t["particles"] == 4 for t in smc)
