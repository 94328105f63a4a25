"""The generation backend protocol: batched decoding from token-id prefixes with per-token statistics.

A backend is what a proposal drives. It never knows which proposal, sampler or task it serves. ``GenerationBackend``
is what every backend provides; a backend's extra abilities are declared protocols of their own, which callers test
with ``isinstance`` (``SupportsCachedGeneration``: keep each row's KV and restart from it; ``SupportsPromptReuse``:
keep the prompts' KV for a read-out that extends them), or on the class with ``issubclass`` (``BuiltFromConfigs``: a
backend that builds its own engine from the run's configs and a folder of the weights).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class SamplingParams:
    """How the next token is drawn. ``temperature=0`` means greedy.

    Defaults sample from the model's true distribution: ``top_k=0`` and ``top_p=1`` (transformers 5 would
    otherwise apply ``top_k=50`` silently).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class Continuation:
    """One decoded continuation with per-token statistics (all lists have one entry per new token).

    - ``logp``: raw base log-probability of the token (temperature 1, no top-k/top-p);
    - ``logq``: log-probability under the sampling distribution actually used (temperature/top-k/top-p);
    - ``entropy``: entropy of the base next-token distribution at that position (a function of the prefix);
    - ``finished``: the continuation ended with an EOS token (which is included in ``token_ids``).
    """

    token_ids: list[int] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    logq: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False
    tokens_encoded: int | None = None  # prefix tokens this row's decode computed (the rest came from a cache); None:
    # the backend does not say (count the whole prefix)


@dataclass
class DecodeStats:
    """Work a backend call did: new tokens decoded, prefix tokens (re-)encoded, model forward passes."""

    tokens_decoded: int = 0
    tokens_encoded: int = 0
    forward_passes: int = 0


# Called after each decoded token of a row with (row index, continuation so far); returning True stops that
# row (used for exact early rejection in power sampling).
StopCallback = Callable[[int, Continuation], bool]

# The per-token statistics a caller may ask ``generate`` for (``stats=``; None means all of them). A statistic not
# asked for may come back as an empty list (a backend may also fill it); one asked for always obeys the contract
# of ``Continuation``, in the continuation returned and in the one a ``stop_callback`` sees.
STATS: frozenset[str] = frozenset({"logp", "logq", "entropy"})


@runtime_checkable
class GenerationBackend(Protocol):
    """What every backend (``hf``, ``vllm``) provides."""

    eos_token_ids: frozenset[int]
    vocab_size: int

    def generate(
        self,
        prefixes: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int | Sequence[int],
        *,
        generator: torch.Generator | None = None,
        stop_callback: StopCallback | None = None,
        stats: Collection[str] | None = None,
    ) -> tuple[list[Continuation], DecodeStats]:
        """Decode one continuation per prefix until EOS, the row's ``max_new_tokens`` or the callback.
        ``stats``: the statistics the caller needs (a subset of ``STATS``; None: all)."""
        ...

    def score(self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Base log p (temperature 1) of each continuation token given its prefix."""
        ...

    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """Base next-token log-probabilities after each prefix, shape ``[batch, vocab]`` (float32, CPU)."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def load_adapter(self, path: str) -> None:
        """Load (or swap in) a LoRA adapter; later calls decode with it."""
        ...

    def unload_adapter(self) -> None: ...


@runtime_checkable
class BuiltFromConfigs(Protocol):
    """A backend class that runs its own engine over the weights (``vllm``): built from the command's ``Configs``, the
    loaded model and tokenizer, and a Hugging Face folder holding the loaded weights, instead of
    ``cls(model, tokenizer)``. Checked on the class: ``issubclass(cls, BuiltFromConfigs)``."""

    @classmethod
    def from_configs(cls, configs: Any, model: Any, tokenizer: Any, model_dir: str) -> GenerationBackend: ...


@runtime_checkable
class CachedRow(Protocol):
    """A backend's kept state of one decoded row (``HFBackend``: a ``RowCache`` of its KV), handed back in
    ``caches=`` to resume from it. It may share storage with the cache it was resumed from: ``materialize()``
    returns a self-contained copy (call it before that older cache is dropped)."""

    token_ids: list[int]

    def materialize(self) -> CachedRow: ...


@dataclass
class CachedGeneration:
    """What ``generate_cached`` returns: one continuation, kept row (or None) and prefill count per input row."""

    continuations: list[Continuation]
    stats: DecodeStats
    caches: list[CachedRow | None] = field(default_factory=list)
    encoded: list[int] = field(default_factory=list)


@runtime_checkable
class SupportsCachedGeneration(Protocol):
    """A backend that keeps each row's state and decodes again from any prefix that extends a prefix of it,
    re-encoding only what the kept state does not cover (power_mh: one token per proposal)."""

    def generate_cached(
        self,
        prefixes: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int | Sequence[int],
        *,
        caches: Sequence[CachedRow | None] | None = None,
        keep_cache: bool = False,
        generator: torch.Generator | None = None,
        stop_callback: StopCallback | None = None,
    ) -> CachedGeneration:
        """``generate`` that starts row ``i`` from ``caches[i]`` (when given) and, with ``keep_cache``, returns
        the state of each row that ends by EOS or its cap."""
        ...


@runtime_checkable
class SupportsPromptReuse(Protocol):
    """A backend that, inside ``reuse_prompts()``, keeps the prompts ``generate`` encodes and starts a later
    prefix that extends one (the forced-answer read-out after a rationale) from the kept prompt."""

    def reuse_prompts(self) -> AbstractContextManager[None]: ...


@runtime_checkable
class Closeable(Protocol):
    """A backend that holds an engine (processes, device memory) until ``close()``; unusable afterwards."""

    def close(self) -> None: ...
