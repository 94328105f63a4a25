"""Hostile code corpus (tests/reliability/hostile_code/): each program would exit 0 only if its attack worked.
Under the sandbox every one is contained: not passed, reward 0, within its limits; this process, its
environment and the files around it are unharmed. The limits are the configurable ``SandboxConfig`` ones."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fem.sandbox import SandboxConfig, run_program
from fem.tasks.code import CodeTask

pytestmark = pytest.mark.reliability

CORPUS = Path(__file__).resolve().parent / "hostile_code"
PROGRAMS = sorted(p.stem for p in CORPUS.glob("*.py"))
LIMITS = SandboxConfig(timeout_s=3.0, cpu_s=2, memory_mb=512, max_file_mb=8, kill_output_bytes=2 * 1024 * 1024)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", PROGRAMS)
def test_hostile_program_is_contained(name, tmp_path, monkeypatch):
    target = tmp_path / "host_files"
    target.mkdir()
    (target / "canary.txt").write_text("host data\n")
    (target / "sub").mkdir()
    (target / "sub" / "keep.txt").write_text("more host data\n")
    before = snapshot(target)
    escape = Path(tempfile_dir()) / "escaped_by_sandbox.txt"
    monkeypatch.setenv("FEM_TEST_SECRET", "hunter2")
    code = f"TARGET_DIR = {str(target)!r}\nHOST_PID = {os.getpid()}\n" + (CORPUS / f"{name}.py").read_text()

    start = time.monotonic()
    result = run_program(code, LIMITS)
    elapsed = time.monotonic() - start
    task = SimpleNamespace(program=lambda c, example: c, sandbox=LIMITS)
    reward = CodeTask.reward(task, code, None)  # the reward a code task gives this completion

    assert not result.passed and result.status != "passed", f"{name}: {result.status}\n{result.stderr_tail[-800:]}"
    assert reward == 0.0
    assert elapsed < LIMITS.timeout_s + 12, f"{name} took {elapsed:.1f}s"
    os.kill(os.getpid(), 0)  # this process is alive
    assert os.environ["FEM_TEST_SECRET"] == "hunter2"
    assert snapshot(target) == before, f"{name} changed host files"
    assert not escape.exists(), f"{name} wrote {escape}"
    assert len(result.stdout_tail) <= LIMITS.max_output_bytes + 8
    print(f"{name}: {result.status} in {elapsed:.1f}s")


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def test_limits_are_configurable_and_a_benign_program_still_passes():
    fast = SandboxConfig(timeout_s=1.0, cpu_s=1)
    assert run_program("print('ok')", fast).passed
    slow = run_program("import time\ntime.sleep(5)", fast)
    assert slow.status == "timeout" and slow.duration_s < 5
    small = run_program("x = bytearray(300 * 1024 * 1024)", SandboxConfig(memory_mb=128))
    assert small.status == "memory"
    assert run_program("x = bytearray(300 * 1024 * 1024)", SandboxConfig(memory_mb=1024)).passed


def test_no_process_survives_a_fork_bomb_without_the_guard(tmp_path):
    """With the Python guard off, only kernel limits and the process group / PID namespace contain it."""
    marker = tmp_path / "alive"
    code = (
        "import os, time\n"
        "for _ in range(20):\n"
        "    if os.fork() == 0:\n"
        f"        while True:\n            open({str(marker)!r}, 'a').close(); time.sleep(0.05)\n"
        "time.sleep(60)\n"
    )
    result = run_program(code, SandboxConfig(timeout_s=1.5, python_guard=False))
    assert not result.passed
    time.sleep(0.5)
    if marker.exists():
        marker.unlink()
    time.sleep(0.5)
    assert not marker.exists(), "a forked child outlived the sandbox"


def test_sigkill_of_the_host_is_impossible_even_by_pid():
    result = run_program(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n", SandboxConfig(timeout_s=2))
    assert not result.passed
    os.kill(os.getpid(), 0)
    assert signal.SIGKILL  # still here
