"""Calibration measures and the temperature-scaling baseline (numpy only; no model, no task).

- ``nll``: mean log loss of stated probabilities against 0/1 or soft targets (probabilities are clipped to
  ``[eps, 1 - eps]``, ``eps = 1e-6``, so a wrong "100 %" costs 13.8 nats instead of infinity).
- ``ece`` with ``binning="width"`` (15 equal-width bins over [0, 1], the convention of fem's reports) or
  ``binning="mass"`` (the confidences sorted and cut into ``n_bins`` groups whose sizes differ by at most one;
  ties are split by input order, so the result is deterministic).
- ``fit_temperature``: the one temperature ``T`` that minimizes the mean cross-entropy of ``softmax(logits / T)``
  against target distributions (one-hot labels or soft targets). The loss is convex in ``beta = 1 / T``; its
  derivative ``E_p[z] - E_t[z]`` is monotone, so the minimum is found by bisection to machine precision.
  ``beta = 0`` (``T = inf``: every answer at chance) is allowed and returned when the logits carry no signal.
- ``bootstrap_interval``: percentile bootstrap interval of any statistic, resampling items or whole groups
  (a pair and its swapped copy are one group: they are not independent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

EPS = 1e-6
BINNINGS = ("width", "mass")
BETA_MAX = 1e4  # T >= 1e-4: sharper than any read-out needs


def _pairs(confidences: Sequence[float], targets: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidences, dtype=float).reshape(-1)
    t = np.asarray(targets, dtype=float).reshape(-1)
    if c.shape != t.shape:
        raise ValueError(f"{c.size} confidences but {t.size} targets")
    if c.size and (np.any(c < 0) or np.any(c > 1) or np.any(t < 0) or np.any(t > 1)):
        raise ValueError("confidences and targets must lie in [0, 1]")
    return c, t


def nll(confidences: Sequence[float], targets: Sequence[float], eps: float = EPS) -> float:
    """Mean ``-[t log c + (1 - t) log(1 - c)]`` (log loss; with soft targets, the cross-entropy); 0.0 when empty."""
    c, t = _pairs(confidences, targets)
    if not c.size:
        return 0.0
    c = np.clip(c, eps, 1 - eps)
    return float(np.mean(-(t * np.log(c) + (1 - t) * np.log1p(-c))))


def bin_indices(confidences: Sequence[float], n_bins: int = 15, binning: str = "width") -> list[np.ndarray]:
    """Indices of the items in each non-empty bin, bins in increasing confidence."""
    if binning not in BINNINGS:
        raise ValueError(f"binning '{binning}' is not one of {BINNINGS}")
    c = np.asarray(confidences, dtype=float).reshape(-1)
    if not c.size:
        return []
    if binning == "width":
        which = np.minimum((c * n_bins).astype(int), n_bins - 1)
        return [np.flatnonzero(which == b) for b in range(n_bins) if np.any(which == b)]
    order = np.argsort(c, kind="stable")
    return [chunk for chunk in np.array_split(order, min(n_bins, c.size)) if chunk.size]


def reliability(
    confidences: Sequence[float], targets: Sequence[float], n_bins: int = 15, binning: str = "width"
) -> list[dict[str, float]]:
    """One row per non-empty bin: ``lo``/``hi`` (bin edges: fixed for width bins, the smallest and largest
    confidence inside for mass bins), ``count``, mean ``confidence``, mean target (``accuracy``), ``gap``."""
    c, t = _pairs(confidences, targets)
    rows = []
    for idx in bin_indices(c, n_bins, binning):
        if binning == "width":
            b = min(int(c[idx[0]] * n_bins), n_bins - 1)
            lo, hi = b / n_bins, (b + 1) / n_bins
        else:
            lo, hi = float(c[idx].min()), float(c[idx].max())
        conf, acc = float(c[idx].mean()), float(t[idx].mean())
        rows.append(
            {"lo": lo, "hi": hi, "count": int(idx.size), "confidence": conf, "accuracy": acc, "gap": acc - conf}
        )
    return rows


def ece(confidences: Sequence[float], targets: Sequence[float], n_bins: int = 15, binning: str = "width") -> float:
    """Expected calibration error: sum over bins of (bin size / n) * |mean target - mean confidence|."""
    c, _ = _pairs(confidences, targets)
    if not c.size:
        return 0.0
    return float(sum(r["count"] / c.size * abs(r["gap"]) for r in reliability(confidences, targets, n_bins, binning)))


def brier(confidences: Sequence[float], targets: Sequence[float]) -> float:
    """Mean squared difference between stated probability and (0/1 or soft) target; 0.0 when empty."""
    c, t = _pairs(confidences, targets)
    return float(np.mean((c - t) ** 2)) if c.size else 0.0


def calibration_summary(confidences: Sequence[float], targets: Sequence[float], n_bins: int = 15) -> dict[str, float]:
    """ECE (equal-width and equal-mass), Brier and NLL of one set of (confidence, target) pairs."""
    return {
        "ece": ece(confidences, targets, n_bins, "width"),
        "ece_mass": ece(confidences, targets, n_bins, "mass"),
        "brier": brier(confidences, targets),
        "nll": nll(confidences, targets),
    }


# ------------------------------------------------------------------------------------------ temperature scaling
def log_probs(probabilities: Sequence[Sequence[float]], floor: float = 1e-12) -> np.ndarray:
    """Logits (log-probabilities) from rows of option probabilities; a zero becomes ``log(floor)``."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=float), floor))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def scale(logits: Sequence[Sequence[float]], temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` row-wise (``T = inf``: uniform rows)."""
    z = np.asarray(logits, dtype=float)
    if math.isinf(temperature):
        return np.full_like(z, 1.0 / z.shape[1])
    return _softmax(z / temperature)


def cross_entropy(logits: Sequence[Sequence[float]], targets: Sequence[Sequence[float]], temperature: float) -> float:
    """Mean ``-sum_k t_k log softmax(z / T)_k``."""
    p = scale(logits, temperature)
    return float(np.mean(-(np.asarray(targets, dtype=float) * np.log(np.maximum(p, 1e-300))).sum(axis=1)))


def _check_fit_inputs(logits: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]) -> tuple[np.ndarray, ...]:
    z = np.asarray(logits, dtype=float)
    t = np.asarray(targets, dtype=float)
    if z.ndim != 2 or z.shape != t.shape or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"need (n, k) logits and targets with n >= 1, k >= 2 (got {z.shape} and {t.shape})")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite (floor zero probabilities first, see log_probs)")
    if np.any(t < 0) or not np.allclose(t.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each target row must be a probability distribution")
    return z, t


def fit_temperature(logits: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]) -> float:
    """The temperature minimizing the mean cross-entropy of ``softmax(logits / T)`` against ``targets``.

    Solved in ``beta = 1 / T`` on ``[0, BETA_MAX]``, where the loss is convex: its derivative
    ``mean_i (E_{softmax(beta z_i)}[z_i] - E_{t_i}[z_i])`` increases with ``beta``. Returns ``inf`` when the
    derivative is already >= 0 at ``beta = 0`` (the logits do not predict the targets at all).
    """
    z, t = _check_fit_inputs(logits, targets)
    observed = float(np.mean((t * z).sum(axis=1)))

    def slope(beta: float) -> float:
        return float(np.mean((_softmax(beta * z) * z).sum(axis=1))) - observed

    if slope(0.0) >= 0:
        return math.inf
    lo, hi = 0.0, 1.0
    while slope(hi) < 0:
        lo, hi = hi, hi * 2
        if hi > BETA_MAX:
            return 1.0 / BETA_MAX
    for _ in range(200):  # bisection: the interval halves each step, 200 steps exhaust double precision
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 1.0 / ((lo + hi) / 2)


# ------------------------------------------------------------------------------------------ bootstrap intervals
def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    groups: Sequence[Hashable] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over ``n`` items.

    ``statistic`` receives an index array (with repeats) into the caller's data. With ``groups`` (one key per
    item) whole groups are resampled, e.g. a pair and its swapped copy. Resamples on which the statistic is not a
    finite number (e.g. no parsed item) are left out; ``(nan, nan)`` when none is.
    """
    if n == 0:
        return (math.nan, math.nan)
    keys = list(groups) if groups is not None else list(range(n))
    if len(keys) != n:
        raise ValueError(f"{len(keys)} group keys for {n} items")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    blocks = [np.asarray(v, dtype=int) for v in members.values()]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        picks = rng.integers(0, len(blocks), size=len(blocks))
        value = statistic(np.concatenate([blocks[j] for j in picks]))
        if value is not None and math.isfinite(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return (float(lo), float(hi))


def with_interval(statistic: Callable[[np.ndarray], float], n: int, **kwargs: Any) -> dict[str, Any]:
    """``{"value": statistic over all items, "interval": [lo, hi]}`` (``bootstrap_interval`` keywords pass through)."""
    return {"value": statistic(np.arange(n)), "interval": list(bootstrap_interval(statistic, n, **kwargs))}
