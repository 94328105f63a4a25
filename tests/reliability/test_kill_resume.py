"""Fault injection: SIGKILL a 2-round training on the tiny model at many moments, resume it, and require the
result of an uninterrupted run with the same seed: the same samples in every round (none missing, none
duplicated), the same final adapter tensors, the same eval predictions, and no corrupt or stale file.
Also a full disk (ENOSPC) at a chosen write: a clear one-line error, then a clean resume once space is back.

Kill points (``FEM_CRASH_AT=point#n``, see fem/utils/faults.py; 3 E-step chunks and 4 optimizer steps per round,
9 state.json writes per run)."""

from __future__ import annotations

import json
import signal

import pytest
from runs import assert_intact, assert_same_as_reference, train

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# (point#occurrence, where it lands)
KILL_POINTS = [
    ("write.state.json#1", "setup: the first state.json, before any work"),
    ("estep.samples_written#1", "round 0 E-step: chunk 0's samples written, its progress line not yet"),
    ("estep.chunk_done#3", "round 0 E-step: last chunk done, E-step not yet marked"),
    ("loop.estep_done#1", "between E-step and M-step of round 0"),
    ("mstep.step#1", "round 0 M-step: after the first optimizer step"),
    ("mstep.adapter_saved#1", "round 0 adapter saved to adapter.tmp, before the rename"),
    ("loop.mstep_done#1", "between M-step and eval of round 0 (adapter in place, state not updated)"),
    ("loop.mstep_saved#1", "round 0: M-step marked done in state.json, eval not started (must not be redone)"),
    ("write.metrics.json#3", "round 0: round metrics.json temp file written, before the rename"),
    ("loop.eval_done#1", "round 0 eval finished, before metrics.jsonl and state.json"),
    ("write.metrics.jsonl#2", "round 0 line of metrics.jsonl: temp file written, before the rename"),
    ("estep.samples_written#5", "round 1 E-step: middle chunk, samples written, progress line not yet"),
    ("write.state.json#6", "state.json after round 1's E-step: temp file written, before the rename"),
    ("mstep.step#6", "round 1 M-step: second optimizer step (adapter initialised from round 0)"),
    ("mstep.adapter_saved#2", "round 1 adapter saved to adapter.tmp, before the rename"),
    ("write.state.json#9", "the final state.json (finished=true), before the rename"),
]


def test_reference_run_is_intact(reference):
    assert_intact(reference)


@pytest.mark.parametrize("point", [p for p, _ in KILL_POINTS], ids=[p for p, _ in KILL_POINTS])
def test_killed_run_resumes_to_the_uninterrupted_result(point, tmp_path, cache_dir, reference):
    out = tmp_path / "run"
    killed = train(out, cache_dir, FEM_CRASH_AT=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr[-2000:]}"
    done = json.loads((out / "state.json").read_text())["completed"] if (out / "state.json").exists() else {}
    resumed = train(out, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for k, phases in done.items():  # a phase state.json called finished is never run again
        for phase, log in (("estep", f"round {k}: E-step"), ("mstep", f"round {k}: M-step")):
            assert phase not in phases or log not in resumed.stderr, f"{point}: the resume redid {phase} of round {k}"
    assert_same_as_reference(out, reference)


def test_killed_twice_then_resumed(tmp_path, cache_dir, reference):
    """A crash during the recovery from a crash (the resumed process counts its own occurrences)."""
    out = tmp_path / "run"
    assert train(out, cache_dir, FEM_CRASH_AT="mstep.step#2").returncode == -signal.SIGKILL
    assert train(out, cache_dir, FEM_CRASH_AT="estep.samples_written#2").returncode == -signal.SIGKILL
    resumed = train(out, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as_reference(out, reference)
