"""The proposal protocol: how each rationale is drawn (ancestral, power_mh, best_of_n, or a user's own)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Cost:
    """Compute spent on one trace (or summed over many): every decoded token counts, rejected work included."""

    tokens_decoded: int = 0
    tokens_reencoded: int = 0
    forward_passes: int = 0
    mh_steps: int = 0
    mh_accepts: int = 0
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{k: getattr(self, k) + getattr(other, k) for k in asdict(self)})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Trace:
    """One sampled response (token ids after the prompt) with its per-token statistics and cost."""

    token_ids: list[int]
    text: str
    logp: list[float]
    logq: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    finished: bool = False
    cost: Cost = field(default_factory=Cost)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sum_logp(self) -> float:
        return float(sum(self.logp))

    @property
    def mean_logp(self) -> float:
        return self.sum_logp / max(len(self.logp), 1)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record (no per-token lists)."""
        return {
            "num_tokens": self.num_tokens,
            "sum_logp": self.sum_logp,
            "mean_logp": self.mean_logp,
            "finished": self.finished,
            "cost": self.cost.to_dict(),
            **self.info,
        }


@runtime_checkable
class Proposal(Protocol):
    """Draws ``num_samples`` traces for each token-id prompt: ``result[i]`` holds the traces of prompt ``i``."""

    name: str

    def propose(
        self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0
    ) -> list[list[Trace]]: ...
