"""Run untrusted Python (model-written code and its tests) in a separate, limited process.

Process tree: this process -> [``unshare`` when available] -> launcher (``python -I``, its own session and
process group) -> program (``python -I``, same group). The program never has this process as its parent,
so ``os.kill(os.getppid(), 9)`` reaches the launcher at most; after every run the whole group is killed.

What is enforced (``SandboxConfig`` sets the numbers):

- kernel limits on the program (``setrlimit``): CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS),
  file size (RLIMIT_FSIZE), open files (RLIMIT_NOFILE), processes (RLIMIT_NPROC; the kernel does not apply it
  to root, which is why the Python guard below also blocks process creation);
- a wall-clock timeout after which the whole process group (and, with namespaces, the whole PID namespace) is
  SIGKILLed; stdout/stderr are read by this process, at most ``max_output_bytes`` kept (the tail) and the run
  killed once ``kill_output_bytes`` were produced;
- when ``unshare`` works (root, or unprivileged user namespaces): a fresh network namespace (no interfaces
  but a down loopback: no network at all) and a fresh PID namespace with its own /proc (the program cannot see
  or signal any process outside it; everything in it dies with the launcher);
- a throwaway temporary working directory, removed afterwards; a minimal environment (PATH, HOME=workdir,
  LANG; nothing from ``os.environ``), stdin from /dev/null;
- a Python audit hook installed before the program runs (``python_guard``; cannot be removed from Python):
  it refuses sockets, writes/renames/removals outside the working directory, signals to other processes,
  process creation (fork, exec, spawn, subprocess, os.system) and loading ``ctypes``/``cffi``.

This contains accidents and the usual hostile snippets (infinite loops, memory and fork bombs, network calls,
writes outside the directory, killing the parent, huge output). It is not a security boundary against an
adversary who targets it (native code could bypass the audit hook; without namespaces the program runs with
this process's user id): run adversarial code inside a container or VM.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class SandboxConfig:
    """Limits of one sandboxed run."""

    timeout_s: float = 10.0  # wall clock of the program
    cpu_s: int = 10  # RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS: address space of the program
    max_processes: int = 32  # RLIMIT_NPROC headroom above the user's current process count (not enforced for root)
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file the program may write
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_output_bytes: int = 64 * 1024  # stdout/stderr bytes kept (the tail) of each stream
    kill_output_bytes: int = 8 * 1024 * 1024  # the run is killed once it wrote this much output
    namespaces: bool = True  # use fresh network + PID namespaces via `unshare` when it works here
    python_guard: bool = True  # audit hook refusing sockets, outside writes, signals, processes, ctypes
    python: str = field(default_factory=lambda: sys.executable)  # interpreter that runs the program


@dataclass
class SandboxResult:
    """Outcome of one run. ``status``: passed | failed | timeout | cpu_limit | memory | file_limit |
    output_limit | killed (the sandbox's own process tree was killed from inside) | error (could not start)."""

    passed: bool
    status: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    isolation: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# The program side: an audit hook, then the program itself. Runs as `python -I -c RUNNER WORKDIR GUARD`.
RUNNER = r"""
import os, sys
_work, _guard = os.path.realpath(sys.argv[1]), sys.argv[2] == "1"
if _guard:
    def _make_hook(work=_work, os=os, realpath=os.path.realpath, fspath=os.fspath, fsdecode=os.fsdecode,
                   getpid=os.getpid, write_flags=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
        process_events = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                          "subprocess.Popen", "pty.spawn", "os.startfile"}
        path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                       "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
                       "os.chflags", "os.lchflags", "os.setxattr", "os.removexattr", "os.mkfifo", "os.mknod"}
        blocked_modules = {"ctypes", "_ctypes", "cffi", "_cffi_backend", "_posixsubprocess"}

        def inside(path):
            if isinstance(path, int):
                return True
            try:
                p = realpath(fsdecode(fspath(path)))
            except (TypeError, ValueError):
                return False
            return p == work or p.startswith(work + os.sep) or p == "/dev/null"

        def hook(event, args):
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None))[:3]
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & write_flags)
                if writing and not inside(path):
                    raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path!r}")
            elif event in path_events:
                for a in args:
                    if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                        raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
            elif event.startswith("socket."):
                raise PermissionError("sandbox: network access is not allowed")
            elif event in process_events:
                raise PermissionError(f"sandbox: creating processes is not allowed ({event})")
            elif event in ("os.kill", "os.killpg", "signal.pthread_kill"):
                if event != "os.kill" or args[0] != getpid():
                    raise PermissionError("sandbox: signalling other processes is not allowed")
            elif event == "import" and args and str(args[0]).split(".")[0] in blocked_modules:
                raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
            elif event.startswith("ctypes."):
                raise PermissionError("sandbox: ctypes is not allowed")
        return hook
    sys.addaudithook(_make_hook())
    del _make_hook
with open(os.path.join(_work, "program.py"), encoding="utf-8") as _f:
    _code = compile(_f.read(), "program.py", "exec")
del _f, _guard
exec(_code, {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__})
"""

# The launcher: sets the limits, runs the program, kills it at the deadline, writes its exit status.
LAUNCHER = r"""
import json, os, resource, signal, subprocess, sys, time
spec = json.loads(sys.argv[1])
def user_tasks():
    uid, n = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    s = f.read()
            except OSError:
                continue
            if f"\nUid:\t{uid}\t" in s:
                n += int(s.split("\nThreads:\t", 1)[1].split("\n", 1)[0]) if "\nThreads:\t" in s else 1
    return n
nproc = spec["max_processes"] + (user_tasks() if os.getuid() != 0 else 0)
def limits():
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (spec["cpu_s"], spec["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (spec["memory_mb"] * mb, spec["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["max_file_mb"] * mb, spec["max_file_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (spec["max_open_files"], spec["max_open_files"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
start = time.monotonic()
status = {"returncode": None, "timeout": False}
try:
    proc = subprocess.Popen([spec["python"], "-I", "-c", spec["runner"], spec["work"], "1" if spec["guard"] else "0"],
                            cwd=spec["work"], env=spec["env"], stdin=subprocess.DEVNULL, preexec_fn=limits)
    try:
        status["returncode"] = proc.wait(timeout=spec["timeout_s"])
    except subprocess.TimeoutExpired:
        status["timeout"] = True
        proc.kill()
        status["returncode"] = proc.wait()
except OSError as exc:
    status["error"] = str(exc)
status["duration_s"] = time.monotonic() - start
with open(spec["status_file"], "w") as f:
    json.dump(status, f)
"""


@functools.cache
def namespace_prefix() -> tuple[str, ...]:
    """The ``unshare`` command prefix that gives fresh network and PID namespaces here, or () if none works."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    base = [exe, "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    candidates = [base] if os.geteuid() == 0 else []
    candidates.append([exe, "--user", "--map-root-user", *base[1:]])
    for cmd in candidates:
        try:
            if subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0:
                return tuple(cmd)
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


class _Reader(threading.Thread):
    """Reads a pipe, keeping the last ``keep`` bytes; calls ``on_limit`` once ``limit`` bytes were read."""

    def __init__(self, stream, keep: int, limit: int, on_limit) -> None:
        super().__init__(daemon=True)
        self.stream, self.keep, self.limit, self.on_limit = stream, keep, limit, on_limit
        self.buffer = bytearray()
        self.total = 0

    def run(self) -> None:
        try:
            while chunk := os.read(self.stream.fileno(), 65536):
                self.total += len(chunk)
                self.buffer += chunk
                if len(self.buffer) > self.keep:
                    del self.buffer[: len(self.buffer) - self.keep]
                if self.total > self.limit:
                    self.on_limit()
                    break
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        return bytes(self.buffer).decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_program(code: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run ``code`` as ``program.py`` in a fresh temporary directory under the limits of ``config``.

    ``passed`` is True when the program exited with status 0 within its limits. Never raises because of what the
    program does.
    """
    config = config or SandboxConfig()
    prefix = namespace_prefix() if config.namespaces else ()
    isolation = (
        ["rlimits", "process-group", "tempdir", "clean-env"]
        + (["netns", "pidns"] if prefix else [])
        + (["audit-guard"] if config.python_guard else [])
    )
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fem-sandbox-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        (work / "program.py").write_text(code, encoding="utf-8")
        status_file = Path(tmp) / "status.json"
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(work),
            "TMPDIR": str(work),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
        }
        spec = {
            "python": config.python,
            "runner": RUNNER,
            "work": str(work),
            "status_file": str(status_file),
            "env": env,
            "guard": config.python_guard,
            "timeout_s": config.timeout_s,
            "cpu_s": int(config.cpu_s),
            "memory_mb": int(config.memory_mb),
            "max_file_mb": int(config.max_file_mb),
            "max_open_files": int(config.max_open_files),
            "max_processes": int(config.max_processes),
        }
        cmd = [*prefix, config.python, "-I", "-S", "-c", LAUNCHER, json.dumps(spec)]
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=str(work),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return SandboxResult(
                False, "error", None, "", f"could not start the sandbox: {exc}", time.monotonic() - start, isolation
            )
        over = threading.Event()

        def on_limit() -> None:
            over.set()
            _kill_group(proc.pid)

        readers = [
            _Reader(s, config.max_output_bytes, config.kill_output_bytes, on_limit) for s in (proc.stdout, proc.stderr)
        ]
        for r in readers:
            r.start()
        hard_timeout = False
        try:
            proc.wait(timeout=config.timeout_s + 10)
        except subprocess.TimeoutExpired:
            hard_timeout = True
        _kill_group(proc.pid)  # whatever is left of the group (orphans included)
        proc.wait()
        for r in readers:
            r.join(timeout=0.5)
        for r in readers:  # a reader still blocked means an escaped process holds the pipe: leave it to it
            if not r.is_alive():
                r.stream.close()
        stdout, stderr = readers[0].text(), readers[1].text()
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            status = None
    duration = time.monotonic() - start
    rc = status.get("returncode") if status else None
    if over.is_set():
        kind = "output_limit"
    elif hard_timeout or (status and status.get("timeout")):
        kind = "timeout"
    elif status is None:
        kind = "killed"
    elif status.get("error"):
        kind, stderr = "error", stderr + status["error"]
    elif rc == 0:
        kind = "passed"
    elif rc in (-signal.SIGXCPU,) or (rc == -signal.SIGKILL and status.get("duration_s", 0) >= config.cpu_s):
        kind = "cpu_limit"
    elif rc == -signal.SIGXFSZ:
        kind = "file_limit"
    elif "MemoryError" in stderr[-2000:]:
        kind = "memory"
    else:
        kind = "failed"
    return SandboxResult(kind == "passed", kind, rc, stdout, stderr, duration, isolation)
