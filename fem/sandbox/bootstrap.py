"""The trusted start of every sandboxed process, run inside the jail before any untrusted code.

``python -I -c <protocol.py + this file> SPEC`` (the import below is stripped from that copy). In order:
rlimits; the reaper fork (``SPEC["reaper"]``, the fallback: the program is then neither PID 1 of a fresh PID
namespace, which ignores signals it has no handler for, nor a direct child of the fem process; the reaper exits
with the program's status, 128 + N for signal N, as bubblewrap does); the switch to a throwaway uid
(``SPEC["uid"]``, when fem runs as root); no_new_privs (``SPEC["no_new_privs"]``, the fallback; bubblewrap sets
it); the audit hook (``SPEC["guard"]``, program side only); then the role:

- ``program``: run ``program.py`` as ``__main__``; its exit status is the result (``run_program``).
- ``candidate``: run ``program.py``, then answer the harness (``protocol.serve``); exits normally after ``exit``,
  so the program's own exit status (atexit handlers, ``os._exit``) still counts.
- ``harness``: run the trusted ``suite.json`` against the candidate (``protocol.run_harness``).
- ``probe``: print ``ok`` if the interpreter can read ``SPEC["must_read"]`` (its stdlib and site-packages) as
  the user it runs as, else why not (checks that the jail works).
"""

import builtins
import json
import os
import resource
import sys

from fem.sandbox.protocol import run_harness, serve  # jail: strip


# ----- the audit hook (program side) -------------------------------------------------------------------------------
def make_guard(work, realpath=os.path.realpath, fspath=os.fspath, fsdecode=os.fsdecode, getpid=os.getpid):
    """An audit hook refusing sockets, writes/renames/removals outside ``work``, signals to other processes,
    process creation and ctypes/cffi. A tripwire with clear messages: the program can reach it (e.g. through gc),
    so containment never rests on it."""
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    process_events = set(
        "os.fork os.forkpty os.system os.exec os.posix_spawn os.spawn subprocess.Popen pty.spawn os.startfile".split()
    )
    path_events = set(
        "os.remove os.rename os.rmdir os.mkdir os.chmod os.chown os.link os.symlink os.truncate os.utime "
        "shutil.rmtree shutil.copyfile shutil.move os.chflags os.lchflags os.setxattr os.removexattr "
        "os.mkfifo os.mknod".split()
    )
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
                isinstance(flags, int) and flags & write_flags
            )
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


# ----- set-up before untrusted code ------------------------------------------------------------------------------
def set_limits(limits):
    mb = 1024 * 1024
    for name, soft, hard in (
        ("RLIMIT_CPU", limits["cpu_s"], limits["cpu_s"] + 1),
        ("RLIMIT_AS", limits["memory_mb"] * mb, limits["memory_mb"] * mb),
        ("RLIMIT_FSIZE", limits["max_file_mb"] * mb, limits["max_file_mb"] * mb),
        ("RLIMIT_NOFILE", limits["max_open_files"], limits["max_open_files"]),
        ("RLIMIT_NPROC", limits["nproc"], limits["nproc"]),
        ("RLIMIT_CORE", 0, 0),
    ):
        resource.setrlimit(getattr(resource, name), (soft, hard))


def become_reaper(fds):
    """Fork; the parent closes ``fds``, waits for the child, reaps orphans (it may be PID 1), and exits with the
    child's status."""
    child = os.fork()
    if child == 0:
        return
    for fd in fds:
        os.close(fd)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def drop_privileges(uid):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if (os.getuid(), os.geteuid(), os.getgid()) != (uid, uid, uid):
        raise SystemExit("sandbox: could not switch to the throwaway user")


def no_new_privs():
    """prctl(PR_SET_NO_NEW_PRIVS): setuid programs cannot raise this process's privileges (best effort)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass
    for name in ("ctypes", "_ctypes", "ctypes._endian"):
        sys.modules.pop(name, None)


def main():
    spec = json.loads(sys.argv[1])
    set_limits(spec["limits"])
    if spec.get("reaper") or os.getpid() == 1:
        become_reaper(spec.get("fds", ()))
    if spec.get("uid") is not None:
        drop_privileges(spec["uid"])
    if spec.get("no_new_privs"):
        no_new_privs()
    sys.path.extend(p for p in spec.get("site", ()) if p not in sys.path)  # site-packages, without .pth code
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # big ints cross as JSON numbers
    role = spec["role"]
    if role == "probe":
        for path in spec.get("must_read", ()):
            try:
                os.listdir(path)
            except OSError as exc:
                print(f"the sandboxed interpreter cannot read {path}: {exc.strerror}")
                return
        print("ok")
        return
    if role == "harness":
        run_harness(spec)
        return
    with open("program.py", encoding="utf-8") as f:
        code = compile(f.read(), "program.py", "exec")
    if spec.get("guard"):
        sys.addaudithook(make_guard(os.path.realpath(os.getcwd())))
    ns = {"__name__": "__main__", "__file__": "program.py", "__builtins__": builtins}
    if role == "candidate":
        rfd, wfd = spec["fds"]
        exec(code, ns)
        serve(ns, rfd, wfd)
    else:
        exec(code, ns)


if __name__ == "__main__":
    main()
