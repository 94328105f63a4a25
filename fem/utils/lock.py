"""One process at a time per output dir: an exclusive ``flock`` on ``OUTPUT_DIR/.fem.lock`` held for a whole command.

The kernel releases a ``flock`` when its holder exits in any way, SIGKILL included, so a lock is never stale: the
file may stay behind, the lock does not. Under ``accelerate launch`` the ranks of one run share the dir, so only
the main process takes the lock (``RunLock.hold(..., take=world.is_main)``); a second launch's main process is
refused and the launcher stops its other ranks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fem.errors import ConfigError

LOCK_FILE = ".fem.lock"


class RunLock:
    """The lock of one output dir, held from ``acquire`` until ``release`` or the end of the process."""

    def __init__(self, output_dir: str | Path, command: str):
        self.output_dir = Path(output_dir)
        self.command = command
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Create the dir if needed and take the lock; ``ConfigError`` naming the holder's pid if another process
        holds it, or naming the OS error if the dir cannot be created (under a file, read-only, ...)."""
        path = self.output_dir / LOCK_FILE
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # the CLI's full-disk line
            raise ConfigError(
                f"cannot create {self.output_dir}: {e.strerror}",
                field="output_dir",
                fix="choose an output_dir you can write to",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = f"pid {holder[0]}" if holder else "a process that is just starting"
            raise ConfigError(
                f"{self.output_dir} is in use by another fem process ({who}"
                + (f", fem {holder[1]}" if len(holder) > 1 else "")
                + ")",
                field="output_dir",
                fix="wait until it finishes (the same command then resumes or finds the run done), "
                "or choose another output_dir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.command}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    @classmethod
    @contextlib.contextmanager
    def hold(cls, output_dir: str | Path, command: str, *, take: bool = True) -> Iterator[RunLock | None]:
        """``with RunLock.hold(dir, "train", take=world.is_main):`` the lock for the block (``take=False``: none)."""
        if not take:
            yield None
            return
        lock = cls(output_dir, command).acquire()
        try:
            yield lock
        finally:
            lock.release()
