"""Helpers shared by the test modules (importable because pyproject sets pytest's pythonpath to tests/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEM = [sys.executable, "-m", "fem"]


def run_fem(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the fem CLI in a subprocess (the way a user does)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*FEM, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


SMOKE_RECIPE = str(ROOT / "recipes" / "smoke" / "tiny_cpu.yaml")
# A 2-round run of the smoke recipe in seconds: for resume and multi-process tests (not for learning).
FAST_OVERRIDES = [
    "--num_train_epochs",
    "2",
    "--train_limit",
    "24",
    "--eval_limit",
    "8",
    "--estep_samples",
    "2",
    "--generation_batch_size",
    "8",
]
