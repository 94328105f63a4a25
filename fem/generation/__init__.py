"""Generation backends behind one protocol (``base.GenerationBackend``): a registered name or a dotted path.

A registered backend's module is imported only when the backend is built (the registry resolves classes lazily):
``backend: vllm`` is the one place fem imports vLLM, so ``fem --help``, ``--dry_run`` and ``backend: hf`` never do.
At config time a backend with an environment check (``vllm``: installed and able to run on this machine) is checked
instead of imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fem.errors import ConfigError
from fem.generation.base import (
    BuiltFromConfigs,
    Continuation,
    DecodeStats,
    GenerationBackend,
    SamplingParams,
    StopCallback,
)
from fem.generation.vllm_env import vllm_problem
from fem.registry import Registry, missing_methods

BACKENDS: dict[str, str] = {"hf": "fem.generation.hf.HFBackend", "vllm": "fem.generation.vllm.VLLMBackend"}
BACKEND_REGISTRY = Registry(
    kind="backend",
    entries=BACKENDS,
    contract="your own GenerationBackend class (fem.generation.base), built as cls(model, tokenizer)",
    missing=missing_methods(
        "generate", "score", "next_token_logprobs", "encode", "decode", "load_adapter", "unload_adapter"
    ),
)
# backend name -> check(dtype, block_size) -> (problem, fix) or None: whether it can run here, told without importing it
ENVIRONMENT_CHECKS: dict[str, Callable[[str, int | None], tuple[str, str] | None]] = {"vllm": vllm_problem}

__all__ = [
    "BACKENDS",
    "Continuation",
    "DecodeStats",
    "GenerationBackend",
    "SamplingParams",
    "StopCallback",
    "build_backend",
    "check_backend",
]


def check_backend(name: str, dtype: str = "auto", block_size: int | None = None) -> None:
    """Validate a backend at config time (no model is loaded, no engine imported): a registered name whose environment
    check passes for weights in ``dtype``, or an importable class of your own. Raises ``ConfigError`` (one line)."""
    env_check = ENVIRONMENT_CHECKS.get(name)
    if env_check is None:
        BACKEND_REGISTRY.check(name)
        return
    problem = env_check(dtype, block_size)
    if problem is not None:
        raise ConfigError(problem[0], field="backend", fix=problem[1])


def build_backend(
    name: str,
    model: Any,
    tokenizer: Any,
    *,
    configs: Any = None,
    model_dir: Callable[[], str] | None = None,
) -> GenerationBackend:
    """Construct the backend registered as ``name`` (its module imported now) around a loaded model and tokenizer. A
    ``BuiltFromConfigs`` class is built from ``configs`` and ``model_dir()`` (a Hugging Face folder of the weights,
    asked only then)."""
    cls = BACKEND_REGISTRY.resolve(name)
    if issubclass(cls, BuiltFromConfigs):
        if configs is None or model_dir is None:
            raise ValueError(f"backend {name} is built from the run's configs and a folder of the weights")
        return cls.from_configs(configs, model, tokenizer, model_dir())
    return cls(model, tokenizer)
