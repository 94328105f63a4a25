"""fem.sandbox: limits and containment under each isolation available here (bwrap; the fallback), the trusted test
harness (run_tests), and the policy when bubblewrap cannot run (refuse unless FEM_SANDBOX accepts the fallback)."""

import io
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from sandbox_modes import sandbox_config

from fem.configs import TaskConfig
from fem.sandbox import (
    SandboxConfig,
    SandboxUnavailable,
    TestSuite,
    describe,
    namespace_prefix,
    run_program,
    run_tests,
)
from fem.sandbox import jail as jail_module
from fem.tasks import build_task
from fem.tasks import code as code_module
from fem.tasks.check import run_checks

FAST = SandboxConfig(timeout_s=10, cpu_s=3, memory_mb=512)  # a ceiling: tests that expect a timeout set their own


@pytest.fixture(params=["bwrap", "fallback"])
def mode(request):
    return request.param


def cfg(mode, base=FAST, **changes):
    return sandbox_config(mode, replace(base, **changes))


def test_passing_and_failing_programs(mode):
    ok = run_program("print('hello')", cfg(mode))
    assert ok.passed and ok.status == "passed" and ok.stdout_tail.strip() == "hello"
    assert ("bwrap" if mode == "bwrap" else "fallback") in ok.isolation
    bad = run_program("assert 1 == 2", cfg(mode))
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr_tail


def test_infinite_loop_is_stopped(mode):
    start = time.monotonic()
    r = run_program("while True:\n    pass", cfg(mode, timeout_s=1.5, cpu_s=10))
    assert r.status == "timeout" and time.monotonic() - start < 8


def test_cpu_limit(mode):
    r = run_program("while True:\n    pass", cfg(mode, timeout_s=20, cpu_s=1))
    assert r.status in ("cpu_limit", "timeout") and not r.passed


def test_memory_bomb(mode):
    r = run_program("x = bytearray(8 * 1024**3)\nprint('allocated')", cfg(mode))
    assert r.status == "memory" and "allocated" not in r.stdout_tail
    r = run_program("a = []\nwhile True:\n    a.append(' ' * 10**7)", cfg(mode))
    assert r.status in ("memory", "timeout") and not r.passed


def test_fork_bomb_blocked(mode):
    r = run_program("import os\nwhile True:\n    os.fork()", cfg(mode))
    assert not r.passed and "not allowed" in r.stderr_tail
    r = run_program("import subprocess\nsubprocess.run(['echo', 'hi'])", cfg(mode))
    assert not r.passed


def test_network_blocked(mode):
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')"
    r = run_program(code, cfg(mode))
    assert not r.passed and "connected" not in r.stdout_tail


@pytest.mark.skipif(not namespace_prefix(), reason="no network namespace available here")
def test_network_namespace_without_guard(mode):
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('connected')"
    r = run_program(code, cfg(mode, timeout_s=5, python_guard=False))
    assert not r.passed and "connected" not in r.stdout_tail


def test_writing_outside_its_dir(mode, tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_program(f"open({str(target)!r}, 'w').write('x')", cfg(mode))
    assert not r.passed and not target.exists()
    r = run_program("import os\nos.remove('/etc/hostname')", cfg(mode))
    assert not r.passed and Path("/etc/hostname").exists() == os.path.exists("/etc/hostname")
    inside = run_program("open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())", cfg(mode))
    assert inside.passed and inside.stdout_tail.strip() == "ok"


def test_killing_its_parent(mode):
    me = os.getpid()
    for guard in (True, False):
        for ns in (True, False):
            r = run_program(
                "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(0, signal.SIGKILL)",
                cfg(mode, SandboxConfig(timeout_s=3, python_guard=guard, namespaces=ns)),
            )
            assert os.getpid() == me  # we are still alive
            assert r.status in ("failed", "killed", "passed")


def test_huge_output_is_capped(mode):
    r = run_program(
        "while True:\n    print('y' * 10000)",
        cfg(mode, timeout_s=10, max_output_bytes=1000, kill_output_bytes=200_000),
    )
    assert r.status == "output_limit" and len(r.stdout_tail) <= 1000
    r = run_program("print('x' * 50000)", cfg(mode, timeout_s=5, max_output_bytes=100))
    assert r.passed and r.stdout_tail == "x" * 99 + "\n"


def test_environment_is_minimal(mode, monkeypatch):
    monkeypatch.setenv("FEM_SECRET_TOKEN", "hunter2")
    r = run_program("import os\nprint(sorted(os.environ))\nprint(os.getcwd())", cfg(mode))
    assert r.passed and "FEM_SECRET_TOKEN" not in r.stdout_tail and "fem-sandbox-" in r.stdout_tail


def test_bwrap_view_is_read_only_and_hides_the_host(tmp_path):
    """With the guard off, only the kernel stands in the way: the system view is read-only (also through dir_fd),
    the program runs as an unprivileged uid, and fem's data sets, this checkout and the host's /tmp are not there."""
    config = sandbox_config("bwrap", replace(FAST, python_guard=False))
    fem_data = Path(__file__).resolve().parents[1] / "fem" / "data"
    (tmp_path / "host_secret.txt").write_text("secret")
    code = f"""
import errno, os, sys
assert os.getuid() != 0 and os.geteuid() != 0
for path in ("/etc/fem_sandbox_probe", sys.prefix + "/fem_sandbox_probe", "/usr/fem_sandbox_probe"):
    try:
        open(path, "w")
    except OSError as exc:
        assert exc.errno in (errno.EROFS, errno.EACCES), (path, exc)
    else:
        raise SystemExit("wrote " + path)
fd = os.open("/etc", os.O_RDONLY)
try:
    os.open("fem_sandbox_probe", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
except OSError as exc:
    assert exc.errno in (errno.EROFS, errno.EACCES), exc
else:
    raise SystemExit("wrote /etc through dir_fd")
for hidden in ({str(fem_data)!r}, {str(tmp_path)!r}, {str(Path(__file__).resolve().parent)!r}):
    assert not os.path.exists(hidden) or not os.listdir(hidden), hidden
print("contained")
"""
    try:
        r = run_program(code, config)
        assert r.passed and r.stdout_tail.strip() == "contained", r.stderr_tail
    finally:
        for path in ("/etc/fem_sandbox_probe", os.path.join(sys.prefix, "fem_sandbox_probe")):
            if os.path.exists(path):
                os.remove(path)


def test_bwrap_runs_an_interpreter_that_lives_under_tmp(tmp_path):
    """A venv under /tmp (a checkout there, as a CI clone can be) stays visible under the jail's private /tmp."""
    if isinstance(jail_module.bwrap_jail(sys.executable), str):
        pytest.skip("bubblewrap does not run here")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    jail = jail_module.bwrap_jail(str(venv / "bin" / "python"))
    assert not isinstance(jail, str), jail


# ----- run_tests: the trusted harness ------------------------------------------------------------------------------
DOUBLE = "def double(x):\n    return 2 * x\n"


def test_run_tests_passes_and_fails(mode):
    suite = TestSuite("assert double(2) == 4\nassert double('ab') == 'abab'\n", ("double",))
    ok = run_tests(DOUBLE, suite, cfg(mode))
    assert ok.passed and ok.status == "passed"
    wrong = run_tests("def double(x):\n    return x\n", suite, cfg(mode))
    assert not wrong.passed and "AssertionError" in wrong.stderr_tail
    missing = run_tests("def other(x):\n    return x\n", suite, cfg(mode))
    assert not missing.passed and "NameError" in missing.stderr_tail


def test_run_tests_values_exceptions_and_objects(mode):
    program = """
class Node:
    def __init__(self, value):
        self.value, self.left = value, None

def depth(node):
    return 0 if node is None else 1 + depth(node.left)

def fail(kind):
    raise {"value": ValueError, "custom": type("Custom", (Exception,), {})}[kind]("boom")

def values():
    import collections
    return [1.5, float("nan"), 10**5000, b"\\x00", {(1, 2): {3}}, collections.Counter("aab"), (x for x in range(3))]
"""
    tests = """
root = Node(1)
root.left = Node(2)
assert depth(root) == 2 and root.left.value == 2 and root == root and root != Node(1)
try:
    fail("value")
except ValueError as exc:
    assert str(exc) == "boom"
else:
    raise AssertionError("no ValueError")
try:
    fail("custom")
except ValueError:
    raise AssertionError("wrong type")
except Exception as exc:
    assert "Custom: boom" in str(exc)
a, nan, big, raw, mapping, counts, gen = values()
assert a == 1.5 and nan != nan and big == 10**5000 and raw == b"\\x00" and mapping == {(1, 2): {3}}
assert type(counts) is dict and counts == {"a": 2, "b": 1} and list(gen) == [0, 1, 2]
"""
    r = run_tests(program, TestSuite(tests, ("Node", "depth", "fail", "values")), cfg(mode))
    assert r.passed, r.stderr_tail


def test_the_programs_exit_status_counts(mode):
    suite = TestSuite("assert double(2) == 4\n", ("double",))
    for tail in ("import atexit, os\natexit.register(os._exit, 3)\n", "import sys\nsys.exit(0)\n"):
        r = run_tests(DOUBLE + tail, suite, cfg(mode))
        assert not r.passed, tail


def test_the_program_cannot_reach_the_tests_or_the_verdict(mode):
    """It cannot read the test file, and writing the harness's success word on every fd it holds changes nothing."""
    program = """
import glob, os
found = glob.glob("../**/suite.json", recursive=True) + glob.glob("/tmp/**/suite.json", recursive=True)
print("found", found)
for fd in range(3, 256):
    try:
        os.write(fd, b"ok")
    except OSError:
        pass
def double(x):
    return 0
"""
    config = sandbox_config(mode, FAST, root_only=True)  # as another user the fallback shares its uid with the tests
    r = run_tests(program, TestSuite("assert double(2) == 4  # SECRET-EXPECTATION\n", ("double",)), config)
    assert not r.passed
    assert "SECRET-EXPECTATION" not in r.stdout_tail and "found []" in r.stdout_tail


# ----- policy: bubblewrap or an explicit opt-in --------------------------------------------------------------------
@pytest.fixture
def no_bwrap(monkeypatch):
    monkeypatch.setattr(jail_module, "bwrap_jail", lambda python: "bwrap not found")
    monkeypatch.setattr(jail_module, "_warned", set())
    monkeypatch.delenv("FEM_SANDBOX", raising=False)


def test_without_bwrap_code_runs_are_refused_unless_asked_for(no_bwrap, monkeypatch, caplog):
    with pytest.raises(SandboxUnavailable) as err:
        run_program("print('hi')", FAST)
    line = err.value.one_line()
    assert "bubblewrap" in line and "bwrap not found" in line and "FEM_SANDBOX=auto" in line and "\n" not in line
    assert describe(FAST).startswith("REFUSED:")
    config = sandbox_config("fallback", FAST)  # a Python the fallback's throwaway uid can read (if root)
    monkeypatch.setenv("FEM_SANDBOX", "auto")
    with caplog.at_level(logging.WARNING, logger="fem.sandbox"):
        first = run_program("print('hi')", replace(config, isolation=None))
        second = run_program("print('hi')", replace(config, isolation=None))
    assert first.passed and second.passed and "fallback" in first.isolation
    warnings = [r.getMessage() for r in caplog.records if "FALLBACK" in r.getMessage()]
    assert len(warnings) == 1 and "NOT contained" in warnings[0]


def test_an_unknown_sandbox_mode_is_one_line(monkeypatch):
    monkeypatch.setenv("FEM_SANDBOX", "docker")
    with pytest.raises(SandboxUnavailable, match="FEM_SANDBOX='docker'.*bwrap, auto, fallback"):
        run_program("print('hi')", FAST)


def test_describe_names_the_isolation():
    line = describe(sandbox_config("bwrap", FAST))
    assert line.startswith("bubblewrap") and "pidns" in line and "netns" in line


def test_code_rewards_are_refused_without_a_sandbox(no_bwrap, monkeypatch, caplog):
    """Loading a code task warns at once (before any model loads); the first reward stops with one line, and
    `fem tasks check` shows it. Loading itself runs no code (`fem sample` needs no sandbox)."""
    monkeypatch.setattr(code_module, "_announced", set())  # as in a fresh process
    with caplog.at_level(logging.WARNING, logger="fem.tasks.code"):
        task = build_task(TaskConfig(task="humaneval"))
        example = task.load("eval")[0]
    assert any("REFUSED" in r.getMessage() and "bubblewrap" in r.getMessage() for r in caplog.records)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        task.reward(example.answer, example)
    out = io.StringIO()
    assert run_checks(["humaneval"], limit=1, out=out) == 1
    assert "bwrap not found" in out.getvalue() and "FEM_SANDBOX=auto" in out.getvalue()
