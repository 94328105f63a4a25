import os
import time
from pathlib import Path

import pytest

from fem.sandbox import SandboxConfig, namespace_prefix, run_program

FAST = SandboxConfig(timeout_s=3, cpu_s=3, memory_mb=512)


def test_passing_and_failing_programs():
    ok = run_program("print('hello')", FAST)
    assert ok.passed and ok.status == "passed" and ok.stdout_tail.strip() == "hello"
    bad = run_program("assert 1 == 2", FAST)
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr_tail


def test_infinite_loop_is_stopped():
    start = time.monotonic()
    r = run_program("while True:\n    pass", SandboxConfig(timeout_s=1.5, cpu_s=10))
    assert r.status == "timeout" and time.monotonic() - start < 8


def test_cpu_limit():
    r = run_program("while True:\n    pass", SandboxConfig(timeout_s=20, cpu_s=1))
    assert r.status in ("cpu_limit", "timeout") and not r.passed


def test_memory_bomb():
    r = run_program("x = bytearray(8 * 1024**3)\nprint('allocated')", FAST)
    assert r.status == "memory" and "allocated" not in r.stdout_tail
    r = run_program("a = []\nwhile True:\n    a.append(' ' * 10**7)", FAST)
    assert r.status in ("memory", "timeout") and not r.passed


def test_fork_bomb_blocked():
    r = run_program("import os\nwhile True:\n    os.fork()", FAST)
    assert not r.passed and "not allowed" in r.stderr_tail
    r = run_program("import subprocess\nsubprocess.run(['echo', 'hi'])", FAST)
    assert not r.passed


def test_network_blocked():
    r = run_program(
        "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')", FAST
    )
    assert not r.passed and "connected" not in r.stdout_tail


@pytest.mark.skipif(not namespace_prefix(), reason="no network namespace available here")
def test_network_namespace_without_guard():
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')"
    r = run_program(code, SandboxConfig(timeout_s=5, python_guard=False))
    assert not r.passed and "connected" not in r.stdout_tail


def test_writing_outside_its_dir(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')", FAST)
    assert not r.passed and not target.exists()
    r = run_program("import os\nos.remove('/etc/hostname')", FAST)
    assert not r.passed and Path("/etc/hostname").exists() == os.path.exists("/etc/hostname")
    inside = run_program("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())", FAST)
    assert inside.passed and inside.stdout_tail.strip() == "ok"


def test_killing_its_parent():
    me = os.getpid()
    for guard in (True, False):
        for ns in (True, False):
            r = run_program(
                "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)",
                SandboxConfig(timeout_s=3, python_guard=guard, namespaces=ns),
            )
            assert os.getpid() == me  # we are still alive
            assert r.status in ("failed", "killed", "passed")


def test_huge_output_is_capped():
    cfg = SandboxConfig(timeout_s=10, max_output_bytes=1000, kill_output_bytes=200_000)
    r = run_program("while True:\n    print('y' * 10000)", cfg)
    assert r.status == "output_limit" and len(r.stdout_tail) <= 1000
    r = run_program("print('x' * 50000)", SandboxConfig(timeout_s=5, max_output_bytes=100))
    assert r.passed and r.stdout_tail == "x" * 99 + "\n"


def test_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("FEM_SECRET_TOKEN", "hunter2")
    r = run_program("import os\nprint(sorted(os.environ))\nprint(os.getcwd())", FAST)
    assert r.passed and "FEM_SECRET_TOKEN" not in r.stdout_tail and "fem-sandbox-" in r.stdout_tail
