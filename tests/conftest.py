"""Shared fixtures: offline, single-threaded, tiny models built in-process."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402


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
