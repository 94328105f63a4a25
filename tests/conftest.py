"""Shared fixtures: offline, single-threaded, tiny models built in-process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    """Where bubblewrap cannot run, code rewards in the tests use the fallback sandbox (FEM_SANDBOX=auto); the
    header says which sandbox they get, and containment tests that need bubblewrap skip, saying why."""
    from fem.sandbox import ENV, bwrap_jail
    from fem.sandbox.jail import Jail

    if ENV not in os.environ and not isinstance(bwrap_jail(sys.executable), Jail):
        os.environ[ENV] = "auto"


def pytest_report_header(config):
    from fem.sandbox import describe

    return f"code sandbox: {describe()}"


@pytest.fixture(scope="session")
def code_sandbox():
    """Skips a test that scores code when no sandbox can run here at all (no bubblewrap, and the fallback refused)."""
    from fem.sandbox import describe

    line = describe()
    if line.startswith("REFUSED"):
        pytest.skip(f"no code sandbox here: {line}")
    return line


@pytest.fixture(scope="session", autouse=True)
def _single_thread_and_cache(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("FEM_CACHE", str(tmp_path_factory.mktemp("fem_cache")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + byte-level tokenizer with a ChatML template, saved as a normal HF folder."""
    from fem.testing.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory) -> Path:
    """A finished 2-round smoke run (FAST_OVERRIDES) with ``report_to: tensorboard``, SIGKILLed twice on the way and
    resumed each time: after round 0's metrics went to the tracker but before state.json recorded round 0's eval
    (``write.state.json#5``: the resumed run evaluates round 0 again), then in round 1's M-step after its first
    optimizer step was logged (``mstep.step#2`` of the resumed process: the M-step restarts from step 1)."""
    import signal

    from helpers import FAST_OVERRIDES, SMOKE_RECIPE, run_fem

    out = tmp_path_factory.mktemp("tracked") / "run"
    args = ("train", "--config", SMOKE_RECIPE, "--output_dir", str(out), *FAST_OVERRIDES, "--report_to", "tensorboard")
    for crash_at in ("write.state.json#5", "mstep.step#2"):
        killed = run_fem(*args, env={"FEM_CRASH_AT": crash_at})
        assert killed.returncode == -signal.SIGKILL, f"{crash_at}: {killed.stderr[-2000:]}"
    finished = run_fem(*args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return out
