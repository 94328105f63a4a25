"""Fault injection for reliability tests: ``FEM_CRASH_AT=point[#n]`` SIGKILLs the process the n-th time (default
first) execution reaches ``crash_point(point)``. Costs one dict lookup when unset."""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """Die here (SIGKILL, no cleanup) if ``FEM_CRASH_AT`` names this point and occurrence."""
    target = os.environ.get("FEM_CRASH_AT")
    if not target:
        return
    name, _, nth = target.partition("#")
    if name != point:
        return
    _seen[point] += 1
    if _seen[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
