"""Metrics shared by tasks and reports: accuracy, calibration (ECE, Brier, reliability table), pass@k, maj@k."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any


def accuracy(correct: Sequence[float | bool]) -> float:
    """Mean of 0/1 (or graded) correctness; 0.0 for an empty list."""
    return float(sum(float(c) for c in correct) / len(correct)) if correct else 0.0


def _check_probs(confidences: Sequence[float], targets: Sequence[float]) -> None:
    if len(confidences) != len(targets):
        raise ValueError(f"{len(confidences)} confidences but {len(targets)} targets")
    for c in confidences:
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c} is outside [0, 1]")


def reliability_table(
    confidences: Sequence[float], targets: Sequence[float], n_bins: int = 15
) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1] (a confidence of exactly 1 falls in the last bin).

    ``targets`` are 0/1 correctness or soft targets in [0, 1] (e.g. a human probability). One row per
    non-empty bin: ``lo``, ``hi``, ``count``, ``confidence`` (mean), ``accuracy`` (mean target), ``gap``.
    """
    _check_probs(confidences, targets)
    bins: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for c, t in zip(confidences, targets):
        bins[min(int(c * n_bins), n_bins - 1)].append((float(c), float(t)))
    rows = []
    for b in sorted(bins):
        items = bins[b]
        conf = sum(c for c, _ in items) / len(items)
        acc = sum(t for _, t in items) / len(items)
        rows.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": len(items),
                "confidence": conf,
                "accuracy": acc,
                "gap": acc - conf,
            }
        )
    return rows


def ece(confidences: Sequence[float], targets: Sequence[float], n_bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width bins of (bin size / n) * |mean target - mean confidence|."""
    n = len(confidences)
    if n == 0:
        return 0.0
    return float(sum(r["count"] / n * abs(r["gap"]) for r in reliability_table(confidences, targets, n_bins)))


def brier(confidences: Sequence[float], targets: Sequence[float]) -> float:
    """Mean squared difference between the stated probability and the (0/1 or soft) target."""
    _check_probs(confidences, targets)
    if not confidences:
        return 0.0
    return float(sum((c - t) ** 2 for c, t in zip(confidences, targets)) / len(confidences))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n - c, k) / C(n, k), for n samples of which c are correct."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per example (got {n})")
    if n - c < k:
        return 1.0
    # numerically stable product form: prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1)))


def mean_pass_at_k(groups: Iterable[Sequence[float | bool]], k: int) -> float:
    """pass@k averaged over examples; each group holds the 0/1 correctness of one example's samples."""
    values = [pass_at_k(len(g), sum(1 for x in g if float(x) >= 1.0), k) for g in groups]
    return float(sum(values) / len(values)) if values else 0.0


def majority(answers: Sequence[Hashable | None]) -> Hashable | None:
    """Most frequent non-None answer; ties broken by first occurrence. None when every answer is None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def maj_at_k(groups: Iterable[tuple[Sequence[Any], Sequence[float]]]) -> float:
    """maj@k: per example, the reward of (any sample with) the majority answer, averaged over examples.

    Each group is (answers, rewards) of one example's k samples; answers must be hashable canonical keys
    (equivalent answers must share a key). An example whose samples are all unparsed scores 0.
    """
    scores = []
    for answers, rewards in groups:
        winner = majority(list(answers))
        scores.append(0.0 if winner is None else float(next(r for a, r in zip(answers, rewards) if a == winner)))
    return float(sum(scores) / len(scores)) if scores else 0.0
