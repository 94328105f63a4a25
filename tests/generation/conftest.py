"""Fixtures: an HFBackend over the session's tiny random Llama (``tiny_model_dir`` from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir):
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    return HFBackend(model, tokenizer)
