"""The runs the reliability suite compares: a 2-round tiny-model training (``train``), and what "the same result
as an uninterrupted run" means (``assert_same_as_reference``). The uninterrupted reference run itself is a
session fixture (``conftest.reference``): one run for every module that compares against it."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ROOT, run_fem

RECIPE = str(ROOT / "recipes" / "smoke" / "tiny_cpu.yaml")
FAST = [
    "--num_train_epochs", "2", "--train_limit", "24", "--eval_limit", "8",
    "--estep_samples", "2", "--generation_batch_size", "8",
]  # fmt: skip


def train(out: Path, cache_dir: Path, **env: str):
    return run_fem(
        "train", "--config", RECIPE, "--output_dir", str(out), *FAST, env={"FEM_CACHE": str(cache_dir), **env}
    )


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
