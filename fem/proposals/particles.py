"""The particle side of ``power_smc`` (``fem.proposals.smc``): log-weight arithmetic, ESS, unbiased resampling,
the particles of one prompt, and the bookkeeping of their row caches and cost. No model, no backend call."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fem.configs import SMC_RESAMPLINGS
from fem.generation.base import CachedRow
from fem.proposals.base import Cost


def log_normalize(logw: np.ndarray) -> np.ndarray:
    """Normalised weights ``W`` from log weights (float64)."""
    w = np.exp(logw - logw.max())
    return w / w.sum()


def ess(logw: np.ndarray) -> float:
    """Effective sample size ``1 / sum W^2`` (between 1 and N)."""
    w = log_normalize(logw)
    return float(1.0 / np.dot(w, w))


def log_mean_exp(logw: np.ndarray) -> float:
    top = float(logw.max())
    return top + math.log(float(np.exp(logw - top).mean()))


def resample_indices(weights: np.ndarray, count: int, rng: np.random.Generator, scheme: str) -> np.ndarray:
    """``count`` ancestor indices with probabilities ``weights``: systematic or multinomial (both unbiased)."""
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    if scheme == "systematic":
        points = (rng.random() + np.arange(count)) / count
    elif scheme == "multinomial":
        points = rng.random(count)
    else:
        raise ValueError(f"unknown resampling '{scheme}' (use one of {SMC_RESAMPLINGS})")
    return np.minimum(np.searchsorted(cdf, points, side="right"), len(weights) - 1)


@dataclass
class Particle:
    """One partial response with its per-token statistics, ``S = sum log p``, log weight and row cache (with the
    number of calls resumed from a kept cache since it was last made self-contained)."""

    tokens: list[int] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    logq: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    sum_logp: float = 0.0
    logw: float = 0.0
    eos: bool = False
    done: bool = False
    cache: CachedRow | None = None
    cache_depth: int = 0

    def copy(self) -> Particle:
        """A duplicate for resampling; the row cache is shared (read-only), not copied."""
        return Particle(
            list(self.tokens), list(self.logp), list(self.logq), list(self.entropy), self.sum_logp, self.logw,
            self.eos, self.done, self.cache, self.cache_depth,
        )  # fmt: skip


@dataclass
class ParticleSystem:
    """The particles of one prompt and what the run spent on them."""

    prompt: list[int]
    particles: list[Particle]
    length: int = 0  # tokens of every live particle (they advance in lockstep)
    lookahead: int = 1
    calls: int = 0
    cost: Cost = field(default_factory=Cost)
    resample_at: list[int] = field(default_factory=list)
    ess_min: float = 1.0
    tokens_discarded: int = 0

    @property
    def done(self) -> bool:
        return all(p.done for p in self.particles)

    @property
    def logw(self) -> np.ndarray:
        return np.array([p.logw for p in self.particles], dtype=np.float64)

    @property
    def weights(self) -> np.ndarray:
        return log_normalize(self.logw)

    @property
    def log_z(self) -> float:
        """``log`` of the SMC estimate of ``sum_y p(y)^alpha`` (unbiased for the sum itself)."""
        return log_mean_exp(self.logw)


def bounded_cache(cache: CachedRow | None, depth: int, max_depth: int = 8) -> tuple[CachedRow | None, int]:
    """A row cache as returned by a call resumed from a cache of chain length ``depth`` (0: from none), with its own
    chain length. It may share the KV of the prefix it was decoded from (e.g. an ancestor's cache, shared by every
    resampled copy), which may share its own, ...; a chain longer than ``max_depth`` is made self-contained
    (``materialize``: one segment, chain length 1)."""
    if cache is None:
        return None, 0
    if depth + 1 > max_depth:
        return cache.materialize(), 1
    return cache, depth + 1


def share_cost(cost: Cost, j: int, k: int) -> Cost:
    """Trace ``j`` of ``k``'s share of a system's cost (integer counters split so that the shares sum exactly)."""

    def part(total: int) -> int:
        return total // k + (1 if j < total % k else 0)

    return Cost(
        tokens_decoded=part(cost.tokens_decoded),
        tokens_reencoded=part(cost.tokens_reencoded),
        forward_passes=part(cost.forward_passes),
        wall_s=cost.wall_s / k,
    )
