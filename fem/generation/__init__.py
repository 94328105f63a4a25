"""Generation backends behind one protocol (``base.GenerationBackend``) and a lazy name -> class registry."""

from __future__ import annotations

import importlib
from typing import Any

from fem.errors import ConfigError
from fem.generation.base import Continuation, DecodeStats, GenerationBackend, SamplingParams, StopCallback

BACKENDS: dict[str, str] = {"hf": "fem.generation.hf.HFBackend"}
UNSHIPPED: dict[str, str] = {"vllm": "the vLLM backend is not shipped yet (GPU-only extra)"}

__all__ = [
    "BACKENDS",
    "Continuation",
    "DecodeStats",
    "GenerationBackend",
    "SamplingParams",
    "StopCallback",
    "build_backend",
]


def build_backend(name: str, model: Any, tokenizer: Any) -> GenerationBackend:
    """Construct the backend registered as ``name`` (imported lazily) around a loaded model and tokenizer."""
    if name in UNSHIPPED:
        raise ConfigError(UNSHIPPED[name], field="backend", fix="use backend: hf")
    if name not in BACKENDS:
        raise ConfigError(
            f"'{name}' is not a generation backend", field="backend", fix=f"use one of {sorted(BACKENDS)}"
        )
    module_name, _, class_name = BACKENDS[name].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, tokenizer)
