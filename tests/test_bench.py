"""`fem bench`: the listing, and the exactness and mixing benchmarks end to end in --quick mode (no timing asserts)."""

from __future__ import annotations

import json

import pytest
from helpers import run_fem


def test_bench_list():
    res = run_fem("bench", "list", timeout=60)
    assert res.returncode == 0, res.stderr
    for name in (
        "exactness",
        "mixing",
        "throughput",
        "power_cost",
        "quality",
        "memory",
        "mstep",
        "em",
        "power",
        "vllm",
    ):
        assert name in res.stdout


def test_bench_unknown_name_is_one_line_error():
    res = run_fem("bench", "nope", timeout=60)
    assert res.returncode == 2
    assert "unknown benchmark 'nope'" in res.stderr and "Traceback" not in res.stderr


def _check_record(record: dict, name: str) -> None:
    assert record["benchmark"] == name and record["quick"] is True
    assert record["command"] == f"fem bench {name} --quick"
    for key in ("cpu", "cores", "torch", "load_average", "date"):
        assert key in record["machine"]
    assert record["results"] and record["goals"]
    for g in record["goals"].values():
        assert set(g) == {"goal", "value", "met"}


def test_bench_exactness_and_mixing_quick(tmp_path):
    for name in ("exactness", "mixing"):
        res = run_fem("bench", name, "--quick", "--out", str(tmp_path), timeout=120)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    ex = json.loads((tmp_path / "exactness.json").read_text())
    _check_record(ex, "exactness")
    for row in ex["results"]:
        assert row["exact_tv_ours"] <= 0.02  # ours is exact (up to finite N)
        assert row["exact_tv_reference"] > 0.1  # the published kernels are visibly biased
        assert row["sampled_tv_reference"] > row["sampled_tv_ours_er"] + 0.1
        assert row["er_outputs_identical"]
    assert ex["goals"]["ours_exact"]["met"] and ex["goals"]["reference_biased"]["met"]
    mix = json.loads((tmp_path / "mixing.json").read_text())
    _check_record(mix, "mixing")
    rows = mix["results"]
    assert {r["cut"] for r in rows} == {"uniform", "entropy"} and {r["sweep"] for r in rows} == {"T", "k"}
    for r in rows:
        assert {"T", "k", "steps_to_tv_0.1", "censored", "curve"} <= set(r)
    assert (tmp_path / "mixing.png").is_file()


def test_bench_power_quick(tmp_path):
    """The power study at a tiny size: every sampler at the same budget, exact references, a goal per budget; the
    real arm's code path on the tiny random model (forced read-out, Wilson interval, wall and latency multiples)."""
    res = run_fem("bench", "power", "--quick", "--out", str(tmp_path), timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    record = json.loads((tmp_path / "power.json").read_text())
    _check_record(record, "power")
    rows = [r for r in record["results"] if r["model"] == "tiny"]
    samplers = [r["sampler"].split(" (")[0] for r in rows]
    assert samplers == [
        "ancestral",
        "low temperature",
        "best-of-4",
        "power_mh uniform",
        "power_mh entropy",
        "power_smc",
        "power_smc",
        "power_smc pooled",
    ]
    smc, smc_half, pooled = rows[-3:]
    assert smc["tokens_per_sample"] == 4 * smc["T"] and rows[0]["wall_x_ancestral"] == 1.0
    assert "ESS 0.5" in smc_half["sampler"] and smc_half["tokens_per_sample"] == 4 * smc["T"]
    assert pooled["tokens_per_sample"] == 4 * smc["T"] and pooled["unique_draws"] <= 1 == smc["unique_draws"]
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["exact_accuracy_p_alpha"] > r["exact_accuracy_p"]
        assert r["mean_log_pi"] <= 0 and r["exact_e_log_pi"] < 0
    real = [r for r in record["results"] if r["model"] != "tiny"]
    assert [r["sampler"].split(" (")[0] for r in real] == [s.replace("4", "2") for s in samplers[:6]]
    assert all(r["model"].startswith("tiny-random-llama toy_arith/train[2] T=4") for r in real)
    for r in real:
        low, high = r["accuracy_ci95"]
        assert low <= r["accuracy"] <= high and r["chance"] == 0.0 and r["mean_alpha_logp"] < 0  # open answers
        assert r["backend"] == "hf"
        assert r["tokens_per_sample"] <= (4 if r["budget_xT"] is None else 8) or "power_mh" in r["sampler"]
    assert real[0]["wall_x_ancestral"] == 1.0 == real[0]["latency_x_ancestral"]
    assert all(r["latency_s"] > 0 for r in real)
    assert set(record["goals"]) == {"tiny_x4", "slice_above_chance_hf", "slice_hf_x2"}
    assert record["settings"]["slice"]["model"] == "tiny-random-llama"


def test_bench_core_arguments_reach_the_script_and_its_record(tmp_path):
    """`fem bench core` passes each section's own arguments (here throughput's fp32-only) and the JSON names them."""
    from fem.commands.bench import CORE

    assert list(CORE) == [
        "exactness",
        "mixing",
        "throughput",
        "power_cost",
        "quality",
        "memory",
        "mstep",
        "em",
        "calibration",
        "power",
        "vllm",
        "vllm_estep",
    ]
    res = run_fem("bench", "throughput", "--quick", *CORE["throughput"], "--out", str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    record = json.loads((tmp_path / "throughput.json").read_text())
    assert record["command"] == "fem bench throughput --quick --dtypes float32"
    assert {r["dtype"] for r in record["results"]} == {"float32"}


def test_bench_finds_the_scripts_from_the_checkout_root_without_an_editable_install(tmp_path, monkeypatch):
    """A regular install has no benchmarks/ next to the package: fem bench uses ./benchmarks or $FEM_BENCHMARKS."""
    from fem.commands import bench
    from fem.errors import FemError

    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site-packages" / "fem" / "commands" / "bench.py"))
    monkeypatch.delenv("FEM_BENCHMARKS", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FemError, match="no benchmarks folder"):
        bench.benchmarks_dir()
    (tmp_path / "elsewhere" / "benchmarks").mkdir(parents=True)
    (tmp_path / "elsewhere" / "benchmarks" / "_common.py").write_text("")
    monkeypatch.setenv("FEM_BENCHMARKS", str(tmp_path / "elsewhere" / "benchmarks"))
    assert bench.benchmarks_dir() == (tmp_path / "elsewhere" / "benchmarks").resolve()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "_common.py").write_text("")
    assert bench.benchmarks_dir() == (tmp_path / "benchmarks").resolve()


def test_bench_calibration_quick(tmp_path):
    """The calibration study end to end on the tiny model: every judge row, intervals, the full-size estimate."""
    res = run_fem("bench", "calibration", "--quick", "--out", str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    record = json.loads((tmp_path / "calibration.json").read_text())
    _check_record(record, "calibration")
    rows = record["results"]
    judges = {r["judge"] for r in rows}
    targets, variants = ("readout", "plain_readout", "plain_readout_debiased", "empirical"), ("plain", "balanced")
    assert judges == {"base", "base + temperature scaling"} | {f"pps {t} / {v}" for t in targets for v in variants}
    scaled = next(r for r in rows if r["judge"] == "base + temperature scaling")
    assert scaled["temperature"] > 0 and scaled["calibration_prompts"] == 6  # 3 training pairs, both ways
    for r in rows:
        assert r["prompts"] == 4  # 2 eval pairs, both ways
        lo, hi = r["accuracy"]["interval"]
        assert lo <= r["accuracy"]["value"] <= hi
    base = next(r for r in rows if r["judge"] == "base" and r["confidence"] == "readout")
    # the tiny model reads out ~0.9 at chance accuracy: the temperature fitted on the training pairs tempers it
    assert scaled["temperature"] > 1 and base["nll"]["value"] > scaled["nll"]["value"]
    estimate = record["estimate"]
    assert set(estimate["cpu_s_per_dataset"]) == {"judge_llmbar_natural"} and estimate["cpu_min_total"] > 0
    assert "full_size_time" in record["goals"]


@pytest.mark.vllm
def test_bench_vllm_sections_quick(tmp_path):
    """`fem bench vllm` and `fem bench vllm_estep` in --quick mode (tiny model; each script runs its own engines in
    its own process): the records name every backend, the ratios are reported (no timing asserts)."""
    pytest.importorskip("vllm")
    from fem.generation.vllm_env import vllm_problem

    if vllm_problem() is not None:
        pytest.skip(vllm_problem()[0])
    for name in ("vllm", "vllm_estep"):
        res = run_fem("bench", name, "--quick", "--out", str(tmp_path), timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        _check_record(json.loads((tmp_path / f"{name}.json").read_text()), name)
    rows = json.loads((tmp_path / "vllm.json").read_text())["results"]
    decode = [r for r in rows if "adapter" not in r]
    assert {r["batch"] for r in decode} == {1, 8}
    assert all(r["vllm_vs_hf"] > 0 and r["vllm_vs_generate_loop"] > 0 for r in decode)
    adapter = [r for r in rows if "adapter" in r]  # with an adapter, merged and as vLLM LoRA, at batch > 1
    assert [(r["adapter"], r["batch"]) for r in adapter] == [("merge", 8), ("lora", 8)]
    assert all(r["vllm_tokens_per_s"] > 0 and r["vllm_vs_no_adapter"] > 0 for r in adapter)
    estep = json.loads((tmp_path / "vllm_estep.json").read_text())["results"]
    assert {r["backend"] for r in estep} == {"hf", "vllm"} and all(r["speedup_vs_hf_float32"] > 0 for r in estep)
