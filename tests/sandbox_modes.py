"""The sandbox isolations the tests can exercise on this machine (importable: pytest's pythonpath is tests/).

``sandbox_config(mode, base)`` returns ``base`` under ``mode`` -- ``bwrap``, ``fallback`` or ``fallback-no-ns`` (the
fallback where ``unshare`` cannot create namespaces, as in a container) -- or skips the test, saying why, where that
isolation cannot run here. As root the fallback runs programs under a throwaway uid that must be able to read the
interpreter; when fem's own interpreter lives where other users cannot read it (e.g. pyenv under /root), the
fallback's tests use the system's /usr/bin/python3 (the jailed side needs only the standard library).
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from fem.sandbox import SandboxConfig, bwrap_jail
from fem.sandbox.jail import Jail, fallback_jail

MODES = ("bwrap", "fallback", "fallback-no-ns")
SYSTEM_PYTHON = "/usr/bin/python3"


def sandbox_config(mode: str, base: SandboxConfig | None = None, *, root_only: bool = False) -> SandboxConfig:
    """``base`` under ``mode``; ``root_only``: the fallback's claims under test hold for root only (skip otherwise)."""
    base = base or SandboxConfig()
    if mode == "fallback-no-ns":
        base, mode = replace(base, namespaces=False), "fallback"
    if mode == "bwrap":
        jail = bwrap_jail(base.python)
        if not isinstance(jail, Jail):
            pytest.skip(f"bubblewrap cannot run here ({jail}); `make install` as root installs it")
        return replace(base, isolation="bwrap")
    if root_only and os.geteuid() != 0:
        pytest.skip("this containment is claimed for the fallback under root only (docs/RELIABILITY.md)")
    reasons = []
    for python in dict.fromkeys([base.python, SYSTEM_PYTHON]):
        if os.path.exists(python):
            jail = fallback_jail(python, base.namespaces)
            if isinstance(jail, Jail):
                return replace(base, isolation="fallback", python=python)
            reasons.append(jail)
    pytest.skip(f"the fallback sandbox cannot run here: {'; '.join(reasons)}")
