"""Cut laws for power MH: where a proposal cuts the current trace, ``c(j | x)`` over ``j in [0, len(x))``.

- ``uniform``: ``c(j|x) = 1/n(x)`` (Karan & Du).
- ``entropy``: ``c(j|x) = (1-eps) w_j / S(x) + eps / n(x)`` with ``w_i = max(H_i - H_{i-1}, 0)^beta``,
  ``H_{-1} := 0`` and ``S = sum_i w_i``; the uniform law when every jump is 0 (Zhou, Mehrotra, Liu; eps ours).

``RunningCut`` evaluates ``log c(j | y)`` while a proposal ``y`` grows (stored prefix entropies for positions
``<= j``); the value never increases as ``y`` grows, which exact early rejection relies on. All in float64.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CUT_LAWS = ("uniform", "entropy")


def _jump_weight(h: float, h_prev: float, beta: float) -> float:
    jump = h - h_prev
    return jump**beta if jump > 0 else 0.0


def jump_weights(entropies: Sequence[float], beta: float) -> list[float]:
    """``w_i = max(H_i - H_{i-1}, 0)^beta`` with ``H_{-1} = 0`` (Python floats: double precision)."""
    out, prev = [], 0.0
    for h in entropies:
        jump = h - prev
        out.append(jump**beta if jump > 0 else 0.0)
        prev = h
    return out


@dataclass(frozen=True)
class CutLaw:
    """A cut law over positions of a response (``kind`` uniform or entropy)."""

    kind: str = "entropy"
    beta: float = 4.0
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in CUT_LAWS:
            raise ValueError(f"unknown cut law '{self.kind}' (use one of {CUT_LAWS})")

    def weights(self, entropies: Sequence[float]) -> list[float] | None:
        """The unnormalised entropy-jump weights (None for the uniform law)."""
        return None if self.kind == "uniform" else jump_weights(entropies, self.beta)

    def probs(self, entropies: Sequence[float], weights: list[float] | None = None) -> np.ndarray:
        """``c(. | x)`` for a trace whose per-position base entropies are ``entropies``."""
        n = len(entropies)
        if n == 0:
            raise ValueError("a cut law needs a non-empty trace")
        w = weights if weights is not None else self.weights(entropies)
        total = sum(w) if w is not None else 0.0
        if total <= 0:
            return np.full(n, 1.0 / n)
        return np.array([(1.0 - self.epsilon) * wi / total + self.epsilon / n for wi in w])

    def log_prob(self, j: int, entropies: Sequence[float], weights: list[float] | None = None) -> float:
        """``log c(j | x)`` (``-inf`` when the law gives ``j`` no mass)."""
        n = len(entropies)
        w = weights if weights is not None else self.weights(entropies)
        total = sum(w) if w is not None else 0.0
        if total <= 0:
            return -math.log(n)
        p = (1.0 - self.epsilon) * w[j] / total + self.epsilon / n
        return math.log(p) if p > 0 else float("-inf")

    def sample(
        self, entropies: Sequence[float], rng: np.random.Generator, weights: list[float] | None = None
    ) -> tuple[int, float]:
        """Draw ``j ~ c(. | x)``; returns ``(j, log c(j | x))``."""
        n = len(entropies)
        w = weights if weights is not None else self.weights(entropies)
        total = sum(w) if w is not None else 0.0
        r = rng.random()
        if total <= 0:
            j = min(int(r * n), n - 1)
            return j, -math.log(n)
        p = [(1.0 - self.epsilon) * wi / total + self.epsilon / n for wi in w]
        cdf = list(itertools.accumulate(p))
        j = min(bisect.bisect_right(cdf, r * cdf[-1]), n - 1)
        while p[j] <= 0:  # never land on a zero-mass position through rounding
            j -= 1
        return j, math.log(p[j])

    def running(self, prefix_entropies: Sequence[float], j: int, weights: list[float] | None = None) -> RunningCut:
        """Start ``log c(j | y)`` for a proposal keeping ``y[:j]``; ``prefix_entropies`` holds at least ``H_0..H_j``
        (the stored values of the current trace: position ``j``'s entropy is a function of the kept prefix)."""
        return RunningCut(self, prefix_entropies, j, weights)


class RunningCut:
    """``log c(j | y)`` for a growing proposal ``y`` (starts with length ``j + 1``)."""

    def __init__(self, law: CutLaw, prefix_entropies: Sequence[float], j: int, weights: list[float] | None = None):
        if len(prefix_entropies) < j + 1:
            raise ValueError("RunningCut needs the entropies of positions 0..j")
        self.law = law
        self.j = j
        self.n = j + 1
        if law.kind == "entropy":
            w = weights if weights is not None else jump_weights(prefix_entropies[: j + 1], law.beta)
            self.w_j = w[j]
            self.total = sum(w[: j + 1])
        else:
            self.w_j = self.total = 0.0
        self.last_h = float(prefix_entropies[j])

    def add(self, entropy: float) -> None:
        """Append one proposal position (after position ``j``) with base entropy ``entropy``."""
        self.n += 1
        if self.law.kind == "entropy":
            self.total += _jump_weight(entropy, self.last_h, self.law.beta)
        self.last_h = entropy

    def log_prob(self) -> float:
        if self.law.kind == "uniform" or self.total <= 0:
            return -math.log(self.n)
        p = (1.0 - self.law.epsilon) * self.w_j / self.total + self.law.epsilon / self.n
        return math.log(p) if p > 0 else float("-inf")
