"""Helpers shared by the test modules (importable because pyproject sets pytest's pythonpath to tests/)."""

from __future__ import annotations

import json
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


def launch_fem(*args: str, env: dict, config: str = "cpu_ddp.yaml") -> subprocess.CompletedProcess:
    """``accelerate launch -m fem ARGS`` with 2 processes under ``accelerate_configs/CONFIG``."""
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        str(ROOT / "accelerate_configs" / config),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        "0",
        "-m",
        "fem",
        *args,
    ]
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **env, "OMP_NUM_THREADS": "1"}
    )


def launch(config: str, out: Path, env: dict, extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``fem train`` on the smoke recipe with 2 processes (``extra``: its overrides, default
    ``FAST_OVERRIDES``)."""
    overrides = FAST_OVERRIDES if extra is None else extra
    args = [
        "train",
        "--config",
        SMOKE_RECIPE,
        "--output_dir",
        str(out),
        *overrides,
        "--per_device_train_batch_size",
        "4",
    ]
    return launch_fem(*args, env=env, config=config)


def failure(result: subprocess.CompletedProcess) -> str:
    """Rank 0's own error lines first (the launcher's summary and the other rank's barrier error fill the tail)."""
    rank0 = [line for line in result.stderr.splitlines() if line.startswith("[rank0]")]
    return "\n".join(rank0)[-3000:] + "\n--- stderr tail ---\n" + result.stderr[-2000:]


def samples(out: Path, round_index: int) -> list[tuple]:
    """A run's kept samples of one round, in a canonical order."""
    lines = (out / f"round_{round_index:03d}" / "samples.jsonl").read_text().splitlines()
    return sorted((s["example_id"], s["attempt"], s["rationale"], s["reward"]) for s in map(json.loads, lines))
