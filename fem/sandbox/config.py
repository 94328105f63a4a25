"""The sandbox's inputs and outputs: limits (``SandboxConfig``), a test suite (``TestSuite``), the outcome of a run
(``SandboxResult``) and the error raised when no acceptable isolation exists here (``SandboxUnavailable``)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

from fem.errors import FemError

ENV = "FEM_SANDBOX"  # bwrap (default) | auto | fallback; SandboxConfig.isolation overrides it
MODES = ("bwrap", "auto", "fallback")


@dataclass
class SandboxConfig:
    """Limits of one sandboxed run (each process of the run gets them: the program, and the tests' harness).

    ``isolation``: ``"bwrap"`` runs under bubblewrap or raises ``SandboxUnavailable``; ``"auto"`` falls back to the
    weaker fallback (logged once as a warning) when bubblewrap does not work here; ``"fallback"`` always uses it.
    None reads ``$FEM_SANDBOX`` (default ``bwrap``). docs/RELIABILITY.md says what each one contains.
    """

    timeout_s: float = 10.0  # wall clock of the whole run (both processes), from their start
    cpu_s: int = 10  # RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS: address space of each process
    max_processes: int = 32  # RLIMIT_NPROC (exact under a throwaway uid; headroom over the user's count otherwise)
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file the program may write
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_output_bytes: int = 64 * 1024  # stdout/stderr bytes kept (the tail) of each stream
    kill_output_bytes: int = 8 * 1024 * 1024  # the run is killed once it wrote this much output
    isolation: str | None = None  # bwrap | auto | fallback; None = $FEM_SANDBOX or bwrap
    namespaces: bool = True  # fallback only: fresh network + PID namespaces via `unshare` when it works here
    python_guard: bool = True  # audit hook in the program's interpreter: a tripwire with clear messages, not a wall
    python: str = field(default_factory=lambda: sys.executable)  # interpreter that runs the program and the tests

    def __post_init__(self) -> None:
        if self.isolation is not None and self.isolation not in MODES:
            raise ValueError(f"SandboxConfig.isolation must be one of {', '.join(MODES)}, got {self.isolation!r}")


@dataclass(frozen=True)
class TestSuite:
    """Trusted test code for ``run_tests``. The harness runs ``prelude``, then binds each name of ``names`` to a
    proxy of the program's object of that name, then runs ``code``; the tests pass when ``code`` runs to its end."""

    __test__ = False  # not a pytest class

    code: str
    names: tuple[str, ...] = ()
    prelude: str = ""


@dataclass
class SandboxResult:
    """Outcome of one run. ``status``: passed | failed | timeout | cpu_limit | memory | file_limit |
    output_limit | killed (a process of the run was killed from inside) | error (could not start).
    ``isolation`` lists the layers the run had (e.g. bwrap, pidns, netns, throwaway-uid, rlimits, audit-guard)."""

    passed: bool
    status: str
    returncode: int | None
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    isolation: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class SandboxUnavailable(FemError):
    """The requested isolation cannot run on this machine (e.g. ``bwrap`` missing or not allowed to create
    namespaces); the message names the reason and the fix."""
