"""What goes into every output dir: the resolved config, library versions and the git SHA."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
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


def command_line(argv: list[str] | None = None) -> str:
    """The command as the user would type it again: ``fem ARGS`` when fem runs as ``fem`` or ``python -m fem``
    (also under ``accelerate launch -m fem``), else the process's own argv, shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    head = Path(argv[0]) if argv else Path()
    if head.name == "fem" or head.parts[-2:] == ("fem", "__main__.py"):
        return shlex.join(["fem", *argv[1:]])
    return shlex.join(argv)


def run_record(config: dict[str, Any], command: str) -> dict[str, Any]:
    """The contents of ``config.yaml``: the resolved config plus provenance (the command line that ran)."""
    plain = json.loads(json.dumps(config, default=str))  # enums and paths as plain strings (safe YAML)
    return {
        "command": command,
        "command_line": command_line(),
        "config": plain,
        "versions": library_versions(),
        "git_sha": git_sha(),
    }
