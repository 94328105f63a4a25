"""Generation backends behind one protocol (``base.GenerationBackend``): a registered name or a dotted path."""

from __future__ import annotations

from typing import Any

from fem.generation.base import Continuation, DecodeStats, GenerationBackend, SamplingParams, StopCallback
from fem.registry import Registry, missing_methods

BACKENDS: dict[str, str] = {"hf": "fem.generation.hf.HFBackend"}
BACKEND_REGISTRY = Registry(
    kind="backend",
    entries=BACKENDS,
    contract="your own GenerationBackend class (fem.generation.base), built as cls(model, tokenizer)",
    missing=missing_methods(
        "generate", "score", "next_token_logprobs", "encode", "decode", "load_adapter", "unload_adapter"
    ),
    unshipped={
        "vllm": "the vLLM backend is not shipped yet (a GPU-only extra that cannot be tested without a GPU here)"
    },
)

__all__ = [
    "BACKENDS",
    "Continuation",
    "DecodeStats",
    "GenerationBackend",
    "SamplingParams",
    "StopCallback",
    "build_backend",
    "check_backend_name",
]


def check_backend_name(name: str) -> None:
    """Validate a backend name at config time (no model is loaded); raises ConfigError."""
    BACKEND_REGISTRY.check(name)


def build_backend(name: str, model: Any, tokenizer: Any) -> GenerationBackend:
    """Construct the backend registered as ``name`` (imported when resolved) around a loaded model and tokenizer."""
    return BACKEND_REGISTRY.resolve(name)(model, tokenizer)
