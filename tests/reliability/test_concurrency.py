"""Concurrent fem processes: two runs in different output dirs at once both equal the uninterrupted reference (no
shared temp file or cache makes one corrupt the other), and two processes on the *same* output dir never both
write it: the second exits 2 with one line naming the first one's pid (issue 17, item 2). The lock is a ``flock``,
so a SIGKILLed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_fem
from runs import FAST, RECIPE, assert_same_as_reference

pytestmark = pytest.mark.reliability


def start_train(out: Path, cache_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fem", "train", "--config", RECIPE, "--output_dir", str(out), *FAST],
        cwd=ROOT, env={**os.environ, "FEM_CACHE": str(cache_dir)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_two_runs_at_once_in_different_dirs(tmp_path, cache_dir, reference):
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [start_train(out, cache_dir) for out in outs]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    for out in outs:
        assert_same_as_reference(out, reference)


@pytest.mark.slow
def test_a_second_train_on_the_same_dir_exits_2_naming_the_first(tmp_path, cache_dir, reference):
    """Before the fix both exited 0 and the second appended the first one's chunks again."""
    out = tmp_path / "run"
    first = start_train(out, cache_dir)
    seen = []
    for line in first.stderr:  # wait until the first run is inside its E-step
        seen.append(line)
        if "round 0: E-step" in line:
            break
    first.send_signal(signal.SIGSTOP)  # keep it there, holding the dir, while the second one starts
    try:
        assert first.poll() is None, "".join(seen)[-3000:]
        env = {"FEM_CACHE": str(cache_dir)}
        second = run_fem("train", "--config", RECIPE, "--output_dir", str(out), *FAST, env=env)
    finally:
        first.send_signal(signal.SIGCONT)
    _, rest = first.communicate(timeout=600)
    assert first.returncode == 0, rest[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert "Traceback" not in second.stderr and "loading model" not in second.stderr
    assert lines[-1].startswith("fem train: error: ") and f"pid {first.pid}" in lines[-1], lines[-1]
    assert_same_as_reference(out, reference)


def hold_lock(directory: Path) -> subprocess.Popen:
    """Another process that takes the run lock of ``directory`` and keeps it."""
    code = (
        "import sys, time; from fem.utils.lock import RunLock; RunLock(sys.argv[1], 'fem train').acquire(); "
        "print('locked', flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


class ReachedCompute(Exception):
    pass


def _tripwire(*args, **kwargs):
    raise ReachedCompute


def test_eval_and_sample_refuse_a_locked_run_dir_and_a_killed_holder_leaves_no_lock(tmp_path, monkeypatch, capsys):
    from fem.cli import main
    from fem.utils.lock import RunLock

    monkeypatch.setattr("fem.runtime.load_model_and_tokenizer", _tripwire)
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        for command in (["eval"], ["sample"], ["train"]):
            with pytest.raises(SystemExit) as exit_info:
                main([*command, "--config", RECIPE, "--output_dir", str(out), *FAST])
            err = capsys.readouterr().err.strip().splitlines()
            assert exit_info.value.code == 2, err
            assert err[-1].startswith(f"fem {command[0]}: error: ") and f"pid {holder.pid}" in err[-1], err[-1]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(out, "test").acquire()  # the kernel dropped the dead holder's lock: nothing stale
    lock.release()
    with pytest.raises(ReachedCompute):  # and fem itself gets past the lock
        main(["eval", "--config", RECIPE, "--output_dir", str(out), *FAST])
