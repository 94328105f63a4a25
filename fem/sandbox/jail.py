"""Where a sandboxed process runs: bubblewrap when it works here; the weaker fallback only when asked for.

``bwrap`` jail (the default): a fresh mount namespace whose root is an empty tmpfs holding read-only binds of the
system (``/usr``, ``/etc``, the ``/bin``, ``/lib*`` links) and of the interpreter's prefixes only (no ``/home``,
``/root``, ``/work``, data sets or fem itself), a private ``/tmp``, ``/dev`` and ``/proc``, the run's own
directory as the only host path it can write; fresh PID, network (loopback only), IPC and UTS namespaces; killed
with its parent (``--die-with-parent``), its own session. As root, bubblewrap keeps CAP_SETUID/CAP_SETGID only
and the bootstrap switches to a throwaway uid (one per process per run, never a real account) before any untrusted
code; as another user, a user namespace maps uid 65534 to that user.

``fallback`` jail (``FEM_SANDBOX=auto`` when bubblewrap does not work, or ``fallback``): rlimits, its own process
group, a temp working dir, a clean environment, the audit-hook tripwire; as root also a throwaway uid, no_new_privs
and, after the run, a kill of every process of that uid; fresh network + PID namespaces when ``unshare`` works.
It does not hide the filesystem: docs/RELIABILITY.md lists what it does not contain.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .config import ENV, MODES, SandboxConfig, SandboxUnavailable

log = logging.getLogger("fem.sandbox")

UID_BASE = 2_000_000_000  # throwaway uids: BASE + (pid % 65536) * 256 + counter; no account uses this range
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
FEM_ROOT = Path(__file__).resolve().parents[1]  # hidden from the program when a bound prefix holds it
FIX = (
    "install bubblewrap (as root: apt-get install bubblewrap; `make install` does it), or set FEM_SANDBOX=auto "
    "to accept the weaker fallback sandbox (docs/RELIABILITY.md says what it does not contain)"
)


@functools.cache
def bootstrap_source() -> str:
    """What every jailed interpreter runs (``python -I -c``): protocol.py, then bootstrap.py minus its fem import."""
    here = Path(__file__).resolve().parent
    boot = (here / "bootstrap.py").read_text(encoding="utf-8")
    boot = "\n".join(line for line in boot.splitlines() if not line.endswith("# jail: strip"))
    return (here / "protocol.py").read_text(encoding="utf-8") + "\n" + boot + "\n"


@dataclass(frozen=True)
class Jail:
    """How to start one sandboxed process: ``command`` builds its argv; ``drop_uid``: the bootstrap switches to a
    throwaway uid; ``reaper``: the bootstrap forks first (fallback); ``isolation``: the layers, for results/logs."""

    kind: str  # "bwrap" | "fallback"
    prefix: tuple[str, ...]
    drop_uid: bool
    reaper: bool
    isolation: tuple[str, ...]
    note: str = ""

    def command(self, python: str, source: str, spec: dict, workdir: Path, writable: bool) -> list[str]:
        tail = [python, "-I", "-S", "-c", source, json.dumps(spec)]
        if self.kind != "bwrap":
            return [*self.prefix, *tail]
        mount = "--bind" if writable else "--ro-bind"
        return [*self.prefix, *_parents(workdir), mount, str(workdir), str(workdir), "--chdir", str(workdir), *tail]


def _parents(path: Path) -> list[str]:
    """bwrap arguments creating the missing parents of ``path`` as 0755 dirs (bwrap's own default is 0700)."""
    args: list[str] = []
    for parent in reversed(path.parents):
        if str(parent) != "/":
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


_INFO = (
    "import json, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps([[sys.prefix, sys.base_prefix, "
    "sys.exec_prefix, sys.base_exec_prefix], [p['purelib'], p['platlib']], [p['stdlib'], p['platstdlib']]]))"
)


@dataclass(frozen=True)
class PythonInfo:
    """Where ``python`` lives: its prefixes (bound into the bwrap view), its site-packages dirs (jailed interpreters
    run with ``-S``, no site processing, ~14 ms a start, and the bootstrap appends these to ``sys.path``), and the
    dirs a jailed interpreter must be able to read (the probe checks them as the throwaway uid)."""

    prefixes: tuple[str, ...]
    site: tuple[str, ...]
    must_read: tuple[str, ...]


@functools.cache
def python_info(python: str) -> PythonInfo:
    try:
        out = subprocess.run([python, "-I", "-c", _INFO], capture_output=True, text=True, timeout=30)
        prefixes, site, stdlib = json.loads(out.stdout) if out.returncode == 0 else ([], [], [])
    except (OSError, subprocess.SubprocessError, ValueError):
        prefixes, site, stdlib = [], [], []
    prefixes.append(str(Path(os.path.realpath(python)).parent.parent))
    prefixes = [p for f in prefixes for p in (f, os.path.realpath(f))]
    site, must_read = list(dict.fromkeys(site)), list(dict.fromkeys(stdlib + site))
    return PythonInfo(tuple(dict.fromkeys(prefixes)), tuple(site), tuple(p for p in must_read if os.path.isdir(p)))


def system_view(python: str) -> list[str]:
    """bwrap arguments for the read-only view: system dirs, the interpreter's prefixes, fem itself masked."""
    args: list[str] = []
    bound: list[str] = []
    for path in sorted({*SYSTEM_PATHS, *python_info(python).prefixes}, key=len):
        if not os.path.lexists(path) or any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
            continue
        if os.path.islink(path) and path in SYSTEM_PATHS:
            args += ["--symlink", os.readlink(path), path]
        else:
            args += [*_parents(Path(path)), "--ro-bind", path, path]
        bound.append(path)
    if any(str(FEM_ROOT).startswith(b.rstrip("/") + "/") for b in bound):
        args += ["--tmpfs", str(FEM_ROOT)]  # an installed fem (and its data sets) inside site-packages
    return args


@functools.cache
def bwrap_jail(python: str) -> Jail | str:
    """The bubblewrap jail for ``python``, or the reason it does not work here (probed once per process)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return "bwrap not found"
    root = os.geteuid() == 0
    namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    identity = (
        ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if root
        else ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    )
    private = ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    # the private /tmp first, then the read-only view: an interpreter (a venv) under /tmp stays visible
    prefix = (exe, *namespaces, *identity, "--die-with-parent", "--new-session", *private, *system_view(python))
    layers = ["bwrap", "ro-system-view", "private-tmp", "pidns", "netns", "ipcns", "utsns"]
    layers += ["throwaway-uid"] if root else ["userns-uid-65534"]
    jail = Jail("bwrap", prefix, drop_uid=root, reaper=False, isolation=tuple(layers))
    if failure := probe(jail, python):
        return f"bwrap failed here: {failure}"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    return Jail("bwrap", prefix, drop_uid=root, reaper=False, isolation=tuple(layers), note=version)


def probe(jail: Jail, python: str) -> str:
    """Start ``python`` in ``jail`` (as the throwaway uid if it uses one) and check it can read its stdlib and
    site-packages; "" when it works, else the reason."""
    spec = {
        "role": "probe",
        "limits": {"cpu_s": 10, "memory_mb": 1024, "max_file_mb": 1, "max_open_files": 64, "nproc": 4096},
        "uid": next_uid() if jail.drop_uid else None,
        "reaper": jail.reaper,
        "must_read": list(python_info(python).must_read),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="fem-sandbox-probe-") as tmp:
            os.chmod(tmp, 0o755)
            done = subprocess.run(
                jail.command(python, bootstrap_source(), spec, Path(tmp), writable=False),
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                cwd=tmp,
            )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not start: {exc}"
    if done.returncode == 0 and done.stdout.strip() == "ok":
        return ""
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


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


@functools.cache
def fallback_jail(python: str, namespaces: bool) -> Jail | str:
    """The fallback jail for ``python``, or why it cannot run here (as root: the throwaway uid cannot read the
    interpreter's files, e.g. a Python under /root)."""
    prefix = namespace_prefix() if namespaces else ()
    root = os.geteuid() == 0
    layers = ["fallback", "rlimits", "process-group", "tempdir", "clean-env"]
    layers += ["throwaway-uid", "no-new-privs", "uid-kill"] if root else []
    layers += ["netns", "pidns"] if prefix else []
    jail = Jail("fallback", prefix, drop_uid=root, reaper=True, isolation=tuple(layers))
    return f"the fallback failed here: {failure}" if (failure := probe(jail, python)) else jail


def requested_mode(config: SandboxConfig) -> str:
    mode = config.isolation or os.environ.get(ENV) or "bwrap"
    if mode not in MODES:
        raise SandboxUnavailable(
            f"{ENV}={mode!r} is not a sandbox mode", field=ENV, fix=f"use one of {', '.join(MODES)}"
        )
    return mode


_warned: set[str] = set()


def resolve_jail(config: SandboxConfig) -> Jail:
    """The jail ``config`` asks for. Raises ``SandboxUnavailable`` when it asks for bubblewrap (the default) and
    bubblewrap does not work here; logs a warning once per process when the fallback is used."""
    mode = requested_mode(config)
    why = "FEM_SANDBOX=fallback" if mode == "fallback" else ""
    if mode != "fallback":
        jail = bwrap_jail(config.python)
        if isinstance(jail, Jail):
            return jail
        if mode == "bwrap":
            raise SandboxUnavailable(
                "code rewards run model-written programs, and fem's sandbox for them needs bubblewrap, "
                f"which does not work here ({jail})",
                fix=FIX,
            )
        why = f"FEM_SANDBOX=auto, {jail}"
    fallback = fallback_jail(config.python, config.namespaces)
    if not isinstance(fallback, Jail):
        raise SandboxUnavailable(
            f"{why}: {fallback}",
            fix="install bubblewrap, or run fem with a Python and venv that other users can read (not under /root)",
        )
    fallback = replace(fallback, note=why)
    if why not in _warned:
        _warned.add(why)
        log.warning("code sandbox: %s", describe_jail(fallback))
    return fallback


def not_contained(jail: Jail) -> list[str]:
    """What a program can still do under the fallback ``jail`` once it disables the audit hook (it can)."""
    if jail.kind == "bwrap":
        return []
    root, namespaces = "throwaway-uid" in jail.isolation, "netns" in jail.isolation
    gaps = ["reading every file its uid may read (data sets and their answers included)"]
    if root:
        gaps.append("writing world-writable dirs (/tmp, /var/tmp, /dev/shm)")
    else:
        gaps += ["writing and deleting anything this user may", "reading the tests (they are this user's files)"]
    if not namespaces:
        gaps.append("the network, the host's loopback services included")
        if not root:
            gaps += [
                "signalling and tracing this user's processes (the tests' harness, so the verdict, included)",
                "processes that leave the process group (daemons outlive the run)",
            ]
    return gaps


def describe_jail(jail: Jail) -> str:
    if jail.kind == "bwrap":
        return f"{jail.note or 'bubblewrap'}: {', '.join(jail.isolation)}"
    return f"FALLBACK ({jail.note}): {', '.join(jail.isolation)}; NOT contained: {'; '.join(not_contained(jail))}"


def describe(config: SandboxConfig | None = None) -> str:
    """One line for logs and ``fem tasks check``: the jail code rewards use here, or why they are refused."""
    config = config or SandboxConfig()
    try:
        return describe_jail(resolve_jail(config))
    except SandboxUnavailable as exc:
        return f"REFUSED: {exc.one_line()}"


# ----- throwaway uids and what they leave behind -------------------------------------------------------------------
_counter = itertools.count()
_counter_lock = threading.Lock()


def next_uid() -> int:
    with _counter_lock:
        n = next(_counter)
    return UID_BASE + ((os.getpid() & 0xFFFF) << 8) + (n & 0xFF)


def kill_uid(uid: int) -> None:
    """SIGKILL every process running as ``uid`` (root only): what a fallback run leaves behind, daemons included."""
    kill = shutil.which("kill")
    cmd = [kill, "-9", "-1"] if kill else [sys.executable, "-I", "-S", "-c", "import os; os.kill(-1, 9)"]
    try:
        subprocess.run(cmd, user=uid, group=uid, extra_groups=[], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass


_tasks_cache: tuple[float, int] = (0.0, 0)


def user_tasks() -> int:
    """Processes and threads of this uid (RLIMIT_NPROC counts them all); cached for two seconds."""
    global _tasks_cache
    stamp, count = _tasks_cache
    if time.monotonic() - stamp < 2.0:
        return count
    uid, count = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    status = f.read()
            except OSError:
                continue
            if f"\nUid:\t{uid}\t" in status:
                count += int(status.split("\nThreads:\t", 1)[1].split("\n", 1)[0]) if "\nThreads:\t" in status else 1
    _tasks_cache = (time.monotonic(), count)
    return count
