"""What goes into every output dir: the resolved config, library versions and the git SHA."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("fem", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "math-verify")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_sha() -> str | None:
    """The SHA of the fem checkout (None when fem is not run from a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_record(config: dict[str, Any], command: str) -> dict[str, Any]:
    """The contents of ``config.yaml``: the resolved config plus provenance."""
    plain = json.loads(json.dumps(config, default=str))  # enums and paths as plain strings (safe YAML)
    return {"command": command, "config": plain, "versions": library_versions(), "git_sha": git_sha()}
