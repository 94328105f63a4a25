"""Seeds: one base seed fixes python, numpy and torch; derived seeds for rounds, ranks and examples."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(base: int, *parts: object) -> int:
    """A stable 63-bit seed from a base seed and labels (e.g. round, example id): independent of process order."""
    text = "/".join([str(base), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
