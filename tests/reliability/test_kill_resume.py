"""Fault injection: SIGKILL a 2-round training on the tiny model at many moments, resume it, and require the
result of an uninterrupted run with the same seed: the same samples in every round (none missing, none
duplicated), the same final adapter tensors, the same eval predictions, and no corrupt or stale file.
Also a full disk (ENOSPC) at a chosen write: a clear one-line error, then a clean resume once space is back.

Kill points (``FEM_CRASH_AT=point#n``, see fem/utils/faults.py; 3 E-step chunks and 4 optimizer steps per round,
9 state.json writes per run)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from helpers import ROOT, run_fem

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RECIPE = str(ROOT / "recipes" / "smoke" / "tiny_cpu.yaml")
FAST = [
    "--num_train_epochs", "2", "--train_limit", "24", "--eval_limit", "8",
    "--estep_samples", "2", "--generation_batch_size", "8",
]  # fmt: skip

# (point#occurrence, where it lands)
KILL_POINTS = [
    ("write.state.json#1", "setup: the first state.json, before any work"),
    ("estep.samples_written#1", "round 0 E-step: chunk 0's samples written, its progress line not yet"),
    ("estep.chunk_done#3", "round 0 E-step: last chunk done, E-step not yet marked"),
    ("loop.estep_done#1", "between E-step and M-step of round 0"),
    ("mstep.step#1", "round 0 M-step: after the first optimizer step"),
    ("mstep.adapter_saved#1", "round 0 adapter saved to adapter.tmp, before the rename"),
    ("loop.mstep_done#1", "between M-step and eval of round 0 (adapter in place, state not updated)"),
    ("write.metrics.json#3", "round 0: round metrics.json temp file written, before the rename"),
    ("loop.eval_done#1", "round 0 eval finished, before metrics.jsonl and state.json"),
    ("write.metrics.jsonl#2", "round 0 line of metrics.jsonl: temp file written, before the rename"),
    ("estep.samples_written#5", "round 1 E-step: middle chunk, samples written, progress line not yet"),
    ("write.state.json#6", "state.json after round 1's E-step: temp file written, before the rename"),
    ("mstep.step#6", "round 1 M-step: second optimizer step (adapter initialised from round 0)"),
    ("mstep.adapter_saved#2", "round 1 adapter saved to adapter.tmp, before the rename"),
    ("write.state.json#9", "the final state.json (finished=true), before the rename"),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fem_cache")


def train(out: Path, cache_dir: Path, **env: str):
    return run_fem(
        "train", "--config", RECIPE, "--output_dir", str(out), *FAST, env={"FEM_CACHE": str(cache_dir), **env}
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    result = train(out, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def samples_by_round(out: Path) -> dict[str, list[tuple]]:
    rounds = {}
    for path in sorted(out.glob("round_*/samples.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rounds[path.parent.name] = [
            (s["example_id"], s["attempt"], s["origin"], s["rationale"], s["completion"], s["reward"], s["chunk"])
            for s in rows
        ]
    return rounds


def predictions(out: Path) -> list[dict]:
    path = out / "round_001" / "eval" / "predictions.jsonl"
    keep = ("example_id", "completion", "reward", "prediction", "answer")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, path.read_text().splitlines())]


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "round_001" / "adapter" / "adapter_model.safetensors"))


def assert_intact(out: Path) -> None:
    """Every JSON/JSONL file parses line by line, every adapter loads, no temp file or dir is left behind."""
    from safetensors.torch import load_file

    for path in out.rglob("*.json"):
        json.loads(path.read_text())
    for path in out.rglob("*.jsonl"):
        for n, line in enumerate(path.read_text().splitlines(keepends=True), 1):
            assert line.endswith("\n"), f"{path}: torn line {n}"
            json.loads(line)
    for path in out.rglob("*.safetensors"):
        assert load_file(str(path)), path
    stale = [str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes]
    assert not stale, f"temp files left behind: {stale}"


def assert_same_as_reference(out: Path, reference: Path) -> None:
    import torch

    got, want = samples_by_round(out), samples_by_round(reference)
    assert sorted(got) == ["round_000", "round_001"] == sorted(want)
    for name in want:
        assert len(got[name]) == len(set(got[name])), f"{name}: duplicate samples after resume"
        missing, extra = set(want[name]) - set(got[name]), set(got[name]) - set(want[name])
        assert not missing and not extra, f"{name}: {len(missing)} missing, {len(extra)} extra samples"
        assert got[name] == want[name], f"{name}: samples in another order"
    for rdir in ("round_000", "round_001"):
        progress = [json.loads(x)["chunk"] for x in (out / rdir / "estep_progress.jsonl").read_text().splitlines()]
        assert progress == [0, 1, 2], f"{rdir}: E-step progress {progress}"
    a, b = adapter(out), adapter(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "final adapter differs"
    assert predictions(out) == predictions(reference), "final eval predictions differ"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [-1, 0, 1]
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and state["completed"] == {
        "0": ["estep", "mstep", "eval"],
        "1": ["estep", "mstep", "eval"],
    }
    assert_intact(out)


def test_reference_run_is_intact(reference):
    assert_intact(reference)


@pytest.mark.parametrize("point", [p for p, _ in KILL_POINTS], ids=[p for p, _ in KILL_POINTS])
def test_killed_run_resumes_to_the_uninterrupted_result(point, tmp_path, cache_dir, reference):
    out = tmp_path / "run"
    killed = train(out, cache_dir, FEM_CRASH_AT=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr[-2000:]}"
    resumed = train(out, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as_reference(out, reference)


def test_killed_twice_then_resumed(tmp_path, cache_dir, reference):
    """A crash during the recovery from a crash (the resumed process counts its own occurrences)."""
    out = tmp_path / "run"
    assert train(out, cache_dir, FEM_CRASH_AT="mstep.step#2").returncode == -signal.SIGKILL
    assert train(out, cache_dir, FEM_CRASH_AT="estep.samples_written#2").returncode == -signal.SIGKILL
    resumed = train(out, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as_reference(out, reference)
