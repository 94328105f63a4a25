"""Running untrusted code from the fem process: start the jailed processes, watch their time and output, kill
everything they left, and say what happened. Nothing the program sends is executed or unpickled here.

``run_program(code)``: one jailed process runs ``code``; passed = exit status 0 within the limits.

``run_tests(code, suite)``: two jailed processes, each in its own jail (own PID, mount and network namespaces,
own throwaway uid as root): the candidate runs ``code`` (model-written) and serves calls; the harness runs the
suite (trusted test code) and reaches the candidate only through two pipes carrying plain data
(``fem.sandbox.protocol``). Passed = the harness ran every test and wrote ``ok`` on a pipe only it holds, both
processes exited with status 0 (the program's exit status counts), all within ``timeout_s`` and the limits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .config import SandboxConfig, SandboxResult, TestSuite
from .jail import Jail, bootstrap_source, kill_uid, next_uid, python_info, resolve_jail, user_tasks

ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}


class _Reader(threading.Thread):
    """Reads a pipe, keeping the last ``keep`` bytes; calls ``on_limit`` once ``limit`` bytes were read."""

    def __init__(self, fd: int, keep: int, limit: int, on_limit) -> None:
        super().__init__(daemon=True)
        self.fd, self.keep, self.limit, self.on_limit = fd, keep, limit, on_limit
        self.buffer = bytearray()
        self.total = 0

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
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


class _Process:
    """One jailed interpreter: its Popen, output readers and throwaway uid (None when it keeps fem's uid)."""

    def __init__(self, jail: Jail, config: SandboxConfig, role: str, workdir: Path, fds: tuple[int, ...], on_limit):
        self.uid = next_uid() if jail.drop_uid else None
        self.sweep = jail.kind == "fallback" and self.uid is not None  # bwrap: the PID namespace dies with it
        if self.uid is not None:  # its own dir, readable by no other run's uid (the tests stay the harness's)
            for path in (workdir, *workdir.iterdir()):
                os.chown(path, self.uid, self.uid)
        workdir.chmod(0o700)
        limits = {
            "cpu_s": int(config.cpu_s),
            "memory_mb": int(config.memory_mb),
            "max_file_mb": int(config.max_file_mb),
            "max_open_files": int(config.max_open_files),
            "nproc": int(config.max_processes) + (0 if self.uid is not None else user_tasks()),
        }
        spec = {
            "role": role,
            "limits": limits,
            "uid": self.uid,
            "fds": list(fds),
            "guard": bool(config.python_guard) and role != "harness",
            "reaper": jail.reaper,
            "no_new_privs": jail.kind == "fallback" and self.uid is not None,
            "site": list(python_info(config.python).site),
        }
        env = {**ENV, "HOME": str(workdir), "TMPDIR": str(workdir)}
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                jail.command(config.python, bootstrap_source(), spec, workdir, writable=role != "harness"),
                cwd=str(workdir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=fds,
                start_new_session=True,
            )
        except OSError:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        self.readers = [
            _Reader(fd, config.max_output_bytes, config.kill_output_bytes, on_limit) for fd in (out_r, err_r)
        ]
        for r in self.readers:
            r.start()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.sweep:
            kill_uid(self.uid)  # what left the process group, daemons included

    def finish(self) -> None:
        self.proc.wait()
        for r in self.readers:
            r.join(timeout=0.5)
        for r in self.readers:  # a reader still blocked means an escaped process holds the pipe: leave it to it
            if not r.is_alive():
                os.close(r.fd)

    @property
    def signal(self) -> int | None:
        rc = self.proc.returncode
        if rc is None or rc == 0:
            return None
        if rc < 0:
            return -rc
        return rc - 128 if 128 < rc <= 128 + 64 else None


def _status(p: _Process, config: SandboxConfig, duration: float) -> str:
    sig, stderr = p.signal, p.readers[1].text()
    if p.proc.returncode == 0:
        return "passed"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and duration >= config.cpu_s):
        return "cpu_limit"
    if sig == signal.SIGXFSZ:
        return "file_limit"
    if "MemoryError" in stderr[-2000:]:
        return "memory"
    if sig == signal.SIGKILL:
        return "killed"
    return "failed"


def _run(jail: Jail, config: SandboxConfig, roles: list[tuple[str, Path, tuple[int, ...]]], close: list[int]):
    """Start the roles' processes, wait for them until ``timeout_s``, kill what is left; returns the processes,
    whether the output limit or the timeout hit, and the duration. Closes the fds ``close`` once started."""
    over = threading.Event()
    procs: list[_Process] = []

    def on_limit() -> None:
        over.set()
        for p in procs:
            p.kill()

    start = time.monotonic()
    try:
        for role, workdir, fds in roles:
            procs.append(_Process(jail, config, role, workdir, fds, on_limit))
    finally:
        for fd in close:
            os.close(fd)
    timed_out = False
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.0, start + config.timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    for p in procs:
        p.kill()
    for p in procs:
        p.finish()
    return procs, over.is_set(), timed_out, time.monotonic() - start


def _workdir(root: str, name: str) -> Path:
    path = Path(root) / name
    path.mkdir(mode=0o700)
    return path


def run_program(code: str, config: SandboxConfig | None = None) -> SandboxResult:
    """Run ``code`` as ``program.py`` in a fresh directory under the limits of ``config``; passed when it exits
    with status 0 within them. Never raises because of what the program does; raises ``SandboxUnavailable`` when
    the isolation ``config`` asks for cannot run here."""
    config = config or SandboxConfig()
    jail = resolve_jail(config)
    with tempfile.TemporaryDirectory(prefix="fem-sandbox-", ignore_cleanup_errors=True) as tmp:
        os.chmod(tmp, 0o711)
        work = _workdir(tmp, "work")
        (work / "program.py").write_text(code, encoding="utf-8")
        try:
            (p,), over, timed_out, duration = _run(jail, config, [("program", work, ())], [])
        except OSError as exc:
            return SandboxResult(False, "error", None, "", f"could not start the sandbox: {exc}", 0.0, [])
    status = "output_limit" if over else "timeout" if timed_out else _status(p, config, duration)
    out, err = (r.text() for r in p.readers)
    return SandboxResult(status == "passed", status, p.proc.returncode, out, err, duration, list(jail.isolation))


def run_tests(code: str, suite: TestSuite, config: SandboxConfig | None = None) -> SandboxResult:
    """Run the model-written ``code`` against the trusted ``suite`` (see the module doc). ``stdout_tail`` is the
    program's output; ``stderr_tail`` the program's errors, then the tests' (after a ``--- tests ---`` line)."""
    config = config or SandboxConfig()
    jail = resolve_jail(config)
    with tempfile.TemporaryDirectory(prefix="fem-sandbox-", ignore_cleanup_errors=True) as tmp:
        os.chmod(tmp, 0o711)
        work, tests = _workdir(tmp, "work"), _workdir(tmp, "tests")
        (work / "program.py").write_text(code, encoding="utf-8")
        payload = {"code": suite.code, "names": list(suite.names), "prelude": suite.prelude}
        (tests / "suite.json").write_text(json.dumps(payload), encoding="utf-8")
        to_candidate, from_candidate, verdict = os.pipe(), os.pipe(), os.pipe()
        candidate_fds = (to_candidate[0], from_candidate[1])
        harness_fds = (from_candidate[0], to_candidate[1], verdict[1])
        try:
            (cand, harness), over, timed_out, duration = _run(
                jail,
                config,
                [("candidate", work, candidate_fds), ("harness", tests, harness_fds)],
                [*candidate_fds, *harness_fds],
            )
        except OSError as exc:
            os.close(verdict[0])
            return SandboxResult(False, "error", None, "", f"could not start the sandbox: {exc}", 0.0, [])
        os.set_blocking(verdict[0], False)
        try:
            said = os.read(verdict[0], 16)
        except OSError:  # nothing written (EAGAIN) or the pipe is gone
            said = b""
        finally:
            os.close(verdict[0])
    if over:
        status = "output_limit"
    elif timed_out:
        status = "timeout"
    else:
        status = _status(cand, config, duration)
        if status == "passed":
            status = _status(harness, config, duration)
        if status == "passed" and said != b"ok":
            status = "failed"
    err = cand.readers[1].text() + "\n--- tests ---\n" + harness.readers[1].text()[-config.max_output_bytes // 2 :]
    return SandboxResult(
        status == "passed",
        status,
        cand.proc.returncode,
        cand.readers[0].text(),
        err,
        duration,
        list(jail.isolation),
    )
