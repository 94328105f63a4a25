"""Eval under load with a proposal that fails on some rows: `fem eval` (CLI subprocess, tiny model) with a user
proposal plugged in by dotted path (tests/reliability/canned_proposal.py) that returns canned completions.

- 1,200 math prompts x 2 samples from a user JSONL with a field mapping: correct, wrong, unparseable, truncated,
  empty, garbage, NUL/emoji/lone-surrogate and 50 KB completions. Every (prompt, sample) is in predictions.jsonl
  exactly once with its completion intact, and metrics.json counts (n, unparsed, accuracy, pass@2) equal the mix.
- MBPP-style code prompts from a user JSONL: correct, wrong, empty, syntax error, raise, SIGABRT, memory bomb,
  fork bomb, output flood, kill-the-parent and a hang past the sandbox timeout: all scored 0 but the correct
  ones, all counted, the eval itself finishes.
- A proposal that raises, or returns too few traces for a prompt: the eval fails with one clear line naming
  the proposal and the row, writes no metrics, drops nothing silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import canned_proposal as C
import pytest
from helpers import run_fem

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
PROPOSAL = "canned_proposal.CannedProposal"
MATH_ROWS = 1200
MATH_SAMPLES = 2
CODE_ROWS = 3 * len(C.CODE_KINDS) + 1  # three of every kind, plus one hang
CODE_HANG_ROW = CODE_ROWS - 1


def env(cache: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path, "FEM_CACHE": str(cache), **extra}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fem_cache")


def write_math(tmp: Path, rows: int) -> tuple[Path, Path]:
    data = tmp / "math_eval.jsonl"
    with data.open("w") as f:
        for r in range(rows):
            tag = f"MATH-{r:05d}"
            record = {"uid": tag, "question": f"{tag}: what is 7 * {r} + 3?", "solution": str(C.math_answer(r))}
            f.write(json.dumps(record) + "\n")
    recipe = tmp / "math.yaml"
    recipe.write_text(
        "model_name_or_path: tiny-random-llama\n"
        "task: gsm8k\n"
        f"eval_file: {data}\n"
        "task_fields: {problem: question, answer: solution, id: uid}\n"
        f"proposals: {PROPOSAL}\n"
        f"num_samples: {MATH_SAMPLES}\n"
        "generation_batch_size: 64\n"
        "max_new_tokens: 8\n"
        f"output_dir: {tmp / 'out'}\n"
        "seed: 0\n"
        "report_to: none\n"
    )
    return recipe, tmp / "out" / "eval"


def write_code(tmp: Path) -> tuple[Path, Path]:
    data = tmp / "code_eval.jsonl"
    with data.open("w") as f:
        for r in range(CODE_ROWS):
            record = {
                "task_id": r,
                "prompt": f"CODE-{r:05d}: write f_{r:05d}(x) returning twice x.",
                "code": f"def f_{r:05d}(x):\n    return 2 * x\n",
                "test_list": [f"assert f_{r:05d}(2) == 4"],
            }
            f.write(json.dumps(record) + "\n")
    recipe = tmp / "code.yaml"
    recipe.write_text(
        "model_name_or_path: tiny-random-llama\n"
        "task: mbpp\n"
        f"eval_file: {data}\n"
        f"proposals: {PROPOSAL}\n"
        "num_samples: 1\n"
        "generation_batch_size: 16\n"
        "max_new_tokens: 8\n"
        f"output_dir: {tmp / 'out'}\n"
        "seed: 0\n"
        "report_to: none\n"
    )
    return recipe, tmp / "out" / "eval"


def read_predictions(eval_dir: Path) -> tuple[list[dict], list[dict]]:
    """(the combined predictions.jsonl, the proposal's own predictions.jsonl); every line must parse."""
    combined = [json.loads(x) for x in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    own = [json.loads(x) for x in (eval_dir / PROPOSAL / "predictions.jsonl").read_text().splitlines()]
    return combined, own


def assert_each_once(records: list[dict], ids: list[str], samples: int) -> None:
    keys = [(r["example_id"], r["sample_index"]) for r in records]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} duplicate predictions"
    want = {(i, s) for i in ids for s in range(samples)}
    missing, extra = want - set(keys), set(keys) - want
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected predictions"


def test_eval_over_1200_prompts_counts_every_row(tmp_path, cache):
    recipe, eval_dir = write_math(tmp_path, MATH_ROWS)
    result = run_fem("eval", "--config", str(recipe), env=env(cache))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    ids = [f"MATH-{r:05d}" for r in range(MATH_ROWS)]
    combined, own = read_predictions(eval_dir)
    for records in (combined, own):
        assert len(records) == MATH_ROWS * MATH_SAMPLES
        assert_each_once(records, ids, MATH_SAMPLES)
    for rec in own:
        r, s = int(rec["example_id"][5:]), rec["sample_index"]
        kind = C.math_kind(r, s)
        assert rec["completion"] == C.math_completion(r, s), f"{rec['example_id']}#{s}: completion altered"
        assert (rec["extracted"] is None) == (kind in C.MATH_UNPARSED), (kind, rec["extracted"])
        assert rec["reward"] == (1.0 if kind in C.MATH_CORRECT else 0.0), (kind, rec["extracted"])

    kinds = [C.math_kind(r, s) for r in range(MATH_ROWS) for s in range(MATH_SAMPLES)]
    n = len(kinds)
    correct = sum(k in C.MATH_CORRECT for k in kinds)
    unparsed = sum(k in C.MATH_UNPARSED for k in kinds)
    solved = sum(any(C.math_kind(r, s) in C.MATH_CORRECT for s in range(MATH_SAMPLES)) for r in range(MATH_ROWS))
    metrics = json.loads((eval_dir / "metrics.json").read_text())[PROPOSAL]
    assert metrics == json.loads((eval_dir / PROPOSAL / "metrics.json").read_text())
    assert metrics["eval/n"] == metrics["eval/predictions"] == n == 2400
    assert metrics["eval/examples"] == MATH_ROWS
    assert metrics["eval/unparsed"] == unparsed
    assert metrics["eval/accuracy"] == pytest.approx(correct / n, abs=1e-12)
    assert metrics[f"eval/pass@{MATH_SAMPLES}"] == pytest.approx(solved / MATH_ROWS, abs=1e-12)
    assert metrics["eval/pass@1"] == pytest.approx(correct / n, abs=1e-12)
    print(f"math load: n={n} correct={correct} unparsed={unparsed} wrong={n - correct - unparsed} solved={solved}")


def test_code_eval_counts_crashing_hanging_and_bombing_programs(tmp_path, cache):
    recipe, eval_dir = write_code(tmp_path)
    result = run_fem("eval", "--config", str(recipe), env=env(cache, FEM_CANNED_HANG_ROW=str(CODE_HANG_ROW)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    ids = [f"mbpp-{r}" for r in range(CODE_ROWS)]
    combined, own = read_predictions(eval_dir)
    for records in (combined, own):
        assert len(records) == CODE_ROWS
        assert_each_once(records, ids, 1)
    kinds = {f"mbpp-{r}": C.code_kind(r, CODE_HANG_ROW) for r in range(CODE_ROWS)}
    for rec in own:
        kind = kinds[rec["example_id"]]
        assert (rec["extracted"] is None) == (kind in C.CODE_UNPARSED), (kind, rec["extracted"])
        assert rec["reward"] == (1.0 if kind in C.CODE_CORRECT else 0.0), kind

    correct = sum(k in C.CODE_CORRECT for k in kinds.values())
    unparsed = sum(k in C.CODE_UNPARSED for k in kinds.values())
    metrics = json.loads((eval_dir / "metrics.json").read_text())[PROPOSAL]
    assert metrics["eval/n"] == metrics["eval/predictions"] == CODE_ROWS
    assert metrics["eval/examples"] == CODE_ROWS
    assert metrics["eval/unparsed"] == unparsed
    assert metrics["eval/accuracy"] == pytest.approx(correct / CODE_ROWS, abs=1e-12)
    assert metrics["eval/pass@1"] == pytest.approx(correct / CODE_ROWS, abs=1e-12)
    print(
        f"code load: n={CODE_ROWS} correct={correct} unparsed={unparsed} sandbox-failed={CODE_ROWS - correct - unparsed}"
    )


@pytest.mark.parametrize("failure", ["raise", "short", "missing"])
def test_a_failing_proposal_fails_the_eval_with_one_line(failure, tmp_path, cache):
    recipe, eval_dir = write_math(tmp_path, 40)
    tag = "MATH-00013"
    for stale in (eval_dir / "metrics.json", eval_dir / PROPOSAL / "metrics.json"):  # an earlier run's results
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text('{"eval/accuracy": 1.0}')
    result = run_fem("eval", "--config", str(recipe), env=env(cache, FEM_CANNED_FAIL=f"{failure}@{tag}"))
    assert result.returncode == 2, f"rc={result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fem eval: error: ") and PROPOSAL in last, last
    # a missing list: the error names the span of the chunk whose count is wrong
    assert (tag if failure != "missing" else "MATH-00039") in last, last
    assert not (eval_dir / "metrics.json").exists() and not (eval_dir / PROPOSAL / "metrics.json").exists()
    assert not (eval_dir / "predictions.jsonl").exists()
    if failure == "raise":
        assert "RuntimeError: canned proposal failure" in (eval_dir / PROPOSAL / "error.txt").read_text()
