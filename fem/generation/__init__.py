"""Generation backends behind one protocol (``base.GenerationBackend``) and a lazy name -> class registry."""

from __future__ import annotations

import importlib
from typing import Any

from fem.errors import ConfigError
from fem.generation.base import Continuation, DecodeStats, GenerationBackend, SamplingParams, StopCallback

BACKENDS: dict[str, str] = {"hf": "fem.generation.hf.HFBackend", "vllm": "fem.generation.vllm.VLLMBackend"}

__all__ = [
    "BACKENDS",
    "Continuation",
    "DecodeStats",
    "GenerationBackend",
    "SamplingParams",
    "StopCallback",
    "build_backend",
]


def build_backend(name: str, model: Any, tokenizer: Any, configs: Any = None) -> GenerationBackend:
    """Construct the backend registered as ``name`` (imported lazily) around a loaded model and tokenizer. With
    ``configs``, a backend class that has ``from_configs`` (vllm: engine options, weights folder) builds from them."""
    if name not in BACKENDS:
        raise ConfigError(
            f"'{name}' is not a generation backend", field="backend", fix=f"use one of {sorted(BACKENDS)}"
        )
    module_name, _, class_name = BACKENDS[name].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if configs is not None and hasattr(cls, "from_configs"):
        return cls.from_configs(configs, model, tokenizer)
    return cls(model, tokenizer)
