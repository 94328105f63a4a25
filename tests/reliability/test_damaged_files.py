"""A damaged line in the middle of a JSONL file fem wrote (a bad sector, a stray edit) never silently costs the
records after it: only an unterminated last line is a torn write and dropped; any other damaged line is an error
naming the file and the line, or, for E-step samples, the damaged chunk is drawn again (same seed, same samples),
also when the E-step had already finished, because the M-step first checks the samples against what the E-step
recorded (issue 17, item 1)."""

from __future__ import annotations

import json
import random
import signal
from dataclasses import dataclass

import pytest
from runs import assert_same_as_reference, train

from fem.configs import EStepConfig
from fem.drawing import PLAIN, Sample
from fem.estep.runner import check_samples, kept_samples, run_estep
from fem.estep.schemes import RejectionScheme
from fem.proposals.base import Cost, Trace
from fem.tasks.base import Example, Prediction
from fem.utils.distributed import World
from fem.utils.io import DamagedFileError, read_jsonl

JUNK = {"utf8": b"@@", "binary": b"\x00\xff"}  # text that is not JSON (silently cut), bytes that are not UTF-8


def damage_line(path, number: int, junk: bytes = JUNK["utf8"], at: int | None = None) -> None:
    """Overwrite line ``number`` (1-based) with ``junk`` at byte ``at`` (default: its middle), keeping its length."""
    lines = path.read_bytes().split(b"\n")
    line = lines[number - 1]
    at = len(line) // 2 if at is None else at
    lines[number - 1] = line[:at] + junk + line[at + len(junk) :]
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("junk", JUNK)
def test_a_damaged_middle_line_is_an_error_naming_file_and_line(junk, tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(11)))
    damage_line(path, 3, JUNK[junk])
    with pytest.raises(DamagedFileError) as info:
        read_jsonl(path, repair=True)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    assert len(path.read_bytes().split(b"\n")) == 12, "the damaged file was truncated"


def test_only_a_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(5)) + '{"i": 5, "tor')
    assert [r["i"] for r in read_jsonl(path, repair=True)] == [0, 1, 2, 3, 4]
    assert path.read_text().endswith('{"i": 4}\n')
    path.write_text('{"i": 0}\n{"i": 1}\r{"i": 2}\n{"i": 3}\n')  # a stray "\r" is damage, not a line end
    with pytest.raises(DamagedFileError, match="line 2"):
        read_jsonl(path)


@dataclass
class Drawer:
    """Deterministic scored draws (kept iff attempt + example index is a multiple of 3)."""

    calls: list

    def draw(self, examples, origin, n, *, seed):
        self.calls.append([e.id for e in examples])
        rng = random.Random(seed)
        out = []
        for e in examples:
            row = []
            for a in range(n):
                ok = (a + int(e.id[2:])) % 3 == 0
                trace = Trace(token_ids=[1], text=f"r{a} {e.id} {rng.random():.6f}", logp=[-1.0], cost=Cost())
                pred = Prediction(e.id, trace.text, "x" if ok else None, 1.0 if ok else 0.0)
                row.append(Sample(e, PLAIN, a, trace, pred, completion=trace.text))
            out.append(row)
        return out


def estep(round_dir, drawer):
    return run_estep(
        round_index=0,
        examples=[Example(id=f"ex{i}", answer="x") for i in range(12)],
        scheme=RejectionScheme(EStepConfig(scheme="rejection", estep_samples=3, estep_max_keep=3)),
        drawer=drawer,
        proposal_name="scripted",
        round_dir=round_dir,
        chunk_size=3,
        seed=5,
        world=World(),
        save_rejected=False,
    )


@pytest.mark.parametrize("junk", JUNK)
def test_a_damaged_sample_line_redraws_its_chunk_and_loses_nothing(junk, tmp_path):
    reference = tmp_path / "reference"
    estep(reference, Drawer([]))
    want = kept_samples(reference)
    assert len(want) == 12 and check_samples(reference, 4) == []

    for damaged_line in (3, len(want)):  # a middle line, and the last one (terminated: not a torn write)
        rdir = tmp_path / f"damaged{damaged_line}"
        estep(rdir, Drawer([]))
        damage_line(rdir / "samples.jsonl", damaged_line, JUNK[junk])
        problems = check_samples(rdir, 4)
        assert problems and "samples.jsonl" in problems[0], problems
        drawer = Drawer([])
        estep(rdir, drawer)  # what the loop does when check_samples finds a problem: the E-step again
        assert len(drawer.calls) == 1, f"exactly the damaged chunk is drawn again, not {drawer.calls}"
        assert kept_samples(rdir) == want
        assert check_samples(rdir, 4) == []


def test_a_damaged_progress_line_redraws_its_chunk(tmp_path):
    reference = tmp_path / "reference"
    estep(reference, Drawer([]))
    rdir = tmp_path / "damaged"
    estep(rdir, Drawer([]))
    damage_line(rdir / "estep_progress.jsonl", 2, at=0)  # (a progress line's counters are not digested)
    assert check_samples(rdir, 4)
    drawer = Drawer([])
    estep(rdir, drawer)
    assert drawer.calls == [["ex3", "ex4", "ex5"]]
    assert kept_samples(rdir) == kept_samples(reference)


@pytest.mark.slow
def test_damaged_samples_of_a_finished_estep_are_redrawn_before_the_mstep(tmp_path, cache_dir, reference):
    """The case of the issue: round 0's E-step finished (state.json says so), then line 3 of its samples.jsonl was
    damaged; before the fix the M-step trained on the 2 samples before it. Now the resumed run equals the
    uninterrupted one."""
    out = tmp_path / "run"
    killed = train(out, cache_dir, FEM_CRASH_AT="mstep.step#1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "estep" in json.loads((out / "state.json").read_text())["completed"]["0"]
    damage_line(out / "round_000" / "samples.jsonl", 3)
    resumed = train(out, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "samples.jsonl" in resumed.stderr and "drawing that chunk again" in resumed.stderr
    assert_same_as_reference(out, reference)
