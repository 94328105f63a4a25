"""Hostile code corpus (tests/reliability/hostile_code/): each program would exit 0 only if its attack worked
(``gc_unhook_daemon``: if the process it leaves behind survives). Under every isolation fem offers, every one is
contained: not passed, reward 0 (through ``CodeTask.reward``), within its limits; this process, its environment,
a host directory the program knows the path of (world-readable, like a home directory), the machine's /tmp and
the process table (no process of the program's outlives the run) are unharmed.

Isolations: ``bwrap`` (skipped, saying why, where bubblewrap cannot run) and ``fallback``. The fallback's
expectations are those of root (CI runs ``make test`` as root; as another user the fallback contains less, see
docs/RELIABILITY.md). A program whose header has ``# escapes-MODE: WHY`` is not contained under MODE (``fallback``
or ``fallback-no-ns``): that case is a strict xfail, so the day it is contained the test says so and the docs
must change. Programs know ``TARGET_DIR`` (the host directory), ``HOST_PID`` and ``LISTEN_PORT`` (a TCP server
listening on the host's loopback).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from sandbox_modes import MODES, sandbox_config

from fem.sandbox import SandboxConfig, TestSuite, run_program
from fem.sandbox.jail import UID_BASE
from fem.tasks.code import CodeTask

pytestmark = pytest.mark.reliability

CORPUS = Path(__file__).resolve().parent / "hostile_code"
PROGRAMS = sorted(p.stem for p in CORPUS.glob("*.py"))
LIMITS = SandboxConfig(timeout_s=3.0, cpu_s=2, memory_mb=512, max_file_mb=8, kill_output_bytes=2 * 1024 * 1024)
ESCAPE = Path("/tmp/escaped_by_sandbox.txt")
MARKER = b"fem-hostile"


def isolation(mode: str, base: SandboxConfig = LIMITS) -> SandboxConfig:
    return sandbox_config(mode, base, root_only=True)


def known_escape(name: str, mode: str) -> str:
    """Why ``name`` is not contained under ``mode``, from its ``# escapes-MODE:`` header line ("" if it is)."""
    for line in (CORPUS / f"{name}.py").read_text().splitlines():
        if line.startswith(f"# escapes-{mode}:"):
            return line.split(":", 1)[1].strip()
    return ""


def leftovers() -> list[int]:
    """Processes a sandboxed program left: named fem-hostile-*, or running as one of this process's throwaway uids."""
    mine = range(UID_BASE + ((os.getpid() & 0xFFFF) << 8), UID_BASE + ((os.getpid() & 0xFFFF) << 8) + 256)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:\t", 1)[1].split("\t", 1)[0])
        except (OSError, IndexError, ValueError):
            continue
        if MARKER in cmdline or uid in mine:
            found.append(int(pid))
    return found


def settle_leftovers(wait_s: float = 3.0) -> list[int]:
    """Leftovers still alive after ``wait_s`` (a killed PID namespace takes a moment to go); kills them."""
    deadline = time.monotonic() + wait_s
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def host_dir():
    """A root-owned (when root) world-readable directory outside the sandbox, like a user's home directory."""
    root = Path(tempfile.mkdtemp(prefix="fem-host-", dir="/tmp"))
    root.chmod(0o755)
    (root / "canary.txt").write_text("host data\n")
    (root / "sub").mkdir(mode=0o755)
    (root / "sub" / "keep.txt").write_text("more host data\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def listener():
    """A TCP server on the host's loopback; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PROGRAMS)
def test_hostile_program_is_contained(name, mode, host_dir, listener, monkeypatch, request):
    config = isolation(mode)
    if known_escape(name, mode):
        request.applymarker(pytest.mark.xfail(strict=True, reason=known_escape(name, mode)))
    before = snapshot(host_dir)
    ESCAPE.unlink(missing_ok=True)
    monkeypatch.setenv("FEM_TEST_SECRET", "hunter2")
    header = f"TARGET_DIR = {str(host_dir)!r}\nHOST_PID = {os.getpid()}\nLISTEN_PORT = {listener}\n"
    code = header + (CORPUS / f"{name}.py").read_text()
    problems = []
    try:
        start = time.monotonic()
        result = run_program(code, config)
        elapsed = time.monotonic() - start
        task = SimpleNamespace(
            program=lambda c, example: c, test_suite=lambda example: TestSuite("pass"), sandbox=config
        )
        reward = CodeTask.reward(task, code, None)  # the reward a code task gives this completion
        if result.passed or result.status == "passed":
            problems.append(f"passed: {result.status}\n{result.stderr_tail[-800:]}")
        if reward != 0.0:
            problems.append(f"reward {reward}")
        if elapsed >= config.timeout_s + 12:
            problems.append(f"took {elapsed:.1f}s")
        os.kill(os.getpid(), 0)  # this process is alive
        if os.environ["FEM_TEST_SECRET"] != "hunter2":
            problems.append("changed the host environment")
        if snapshot(host_dir) != before:
            problems.append("changed host files")
        if ESCAPE.exists():
            problems.append(f"wrote {ESCAPE}")
        if len(result.stdout_tail) > config.max_output_bytes + 8:
            problems.append("kept too much output")
    finally:
        ESCAPE.unlink(missing_ok=True)
        if left := settle_leftovers():
            problems.append(f"left processes behind: {left}")
    assert not problems, f"{name} under {mode}: {problems}"
    print(f"{name} ({mode}): {result.status} in {elapsed:.1f}s")


@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_limits_are_configurable_and_a_benign_program_still_passes(mode):
    fast = isolation(mode, SandboxConfig(timeout_s=1.0, cpu_s=1))
    assert run_program("print('ok')", fast).passed
    slow = run_program("import time\ntime.sleep(5)", fast)
    assert slow.status == "timeout" and slow.duration_s < 5
    small = run_program("x = bytearray(300 * 1024 * 1024)", replace(fast, timeout_s=10, memory_mb=128))
    assert small.status == "memory"
    assert run_program("x = bytearray(300 * 1024 * 1024)", replace(fast, timeout_s=10, memory_mb=1024)).passed


@pytest.mark.parametrize("mode", MODES)
def test_no_process_survives_a_fork_bomb_without_the_guard(mode):
    """With the Python guard off, only the jail contains it: PID namespace, or (fallback without namespaces, as
    root) the kill of every process of the run's throwaway uid, which also takes the children that left the
    process group with setsid."""
    config = isolation(mode, SandboxConfig(timeout_s=1.5, python_guard=False))
    code = (
        "import os, time\n"
        "for _ in range(20):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        os.execv('/bin/sleep', ['fem-hostile-forkchild', '60'])\n"
        "time.sleep(60)\n"
    )
    result = run_program(code, config)
    assert not result.passed
    assert not settle_leftovers(), "a forked child outlived the sandbox"


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_sigkill_of_the_host_is_impossible_even_by_pid(mode, guard):
    config = isolation(mode, SandboxConfig(timeout_s=2, python_guard=guard))
    result = run_program(f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n", config)
    assert not result.passed
    os.kill(os.getpid(), 0)
