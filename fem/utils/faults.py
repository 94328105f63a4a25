"""Fault injection for reliability tests: ``FEM_CRASH_AT=point[#n]`` SIGKILLs the process the n-th time (default
first) execution reaches ``crash_point(point)``; ``FEM_DISK_FULL_AT=point[#n]`` raises ``OSError(ENOSPC)`` there
instead (a full disk, e.g. ``write.state.json`` fails like a real write would). Costs two dict lookups when unset."""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_seen: Counter[tuple[str, str]] = Counter()


def _reached(variable: str, point: str) -> bool:
    """True the n-th time ``point`` is reached when the environment variable names ``point[#n]``."""
    target = os.environ.get(variable)
    if not target:
        return False
    name, _, nth = target.partition("#")
    if name != point:
        return False
    _seen[variable, point] += 1
    return _seen[variable, point] == int(nth or 1)


def crash_point(point: str) -> None:
    """Die here (SIGKILL, no cleanup) if ``FEM_CRASH_AT`` names this point and occurrence; raise ENOSPC here if
    ``FEM_DISK_FULL_AT`` does."""
    if _reached("FEM_CRASH_AT", point):
        os.kill(os.getpid(), signal.SIGKILL)
    if _reached("FEM_DISK_FULL_AT", point):
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (simulated by FEM_DISK_FULL_AT)", point)
