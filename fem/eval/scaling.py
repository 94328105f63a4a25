"""Temperature scaling, the calibration baseline: one temperature fitted on a calibration split, applied to eval.

A prediction's option logits are the logs of its read-out probabilities (``info.option_probs``, forced mode) or,
without a read-out, of its stated confidence ``c`` in its verdict with ``1 - c`` spread over the other options. The
temperature minimizes the cross-entropy of ``softmax(logits / T)`` against the task's target distribution
(``target_distribution``: the gold verdict one-hot for judges, the human-confidence probabilities for TL;DR) on the
calibration predictions. On the eval split each verdict stays as it was (``T > 0`` keeps the argmax); its confidence
becomes the scaled probability of that verdict, and the task's own metrics are recomputed (prefixed ``ts_``).
Predictions without a verdict or a confidence take no part in the fit and stay unparsed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from fem import calibration as C
from fem.errors import ConfigError, FemError
from fem.tasks.base import Example, Prediction, Task

SCALED_METRICS = ("ece", "brier", "nll", "reliability", "mean_confidence")  # what a temperature changes


def prediction_logits(prediction: Prediction, options: Sequence[str]) -> list[float] | None:
    """Log-probabilities over ``options`` of one prediction; None when it has neither read-out nor confidence."""
    probs = prediction.info.get("option_probs") if prediction.info else None
    if isinstance(probs, dict) and all(o in probs for o in options):
        return C.log_probs([[float(probs[o]) for o in options]])[0].tolist()
    c = prediction.confidence
    if prediction.extracted not in options or c is None or not 0.0 <= c <= 1.0 or len(options) < 2:
        return None
    rest = (1.0 - c) / (len(options) - 1)
    return C.log_probs([[c if o == prediction.extracted else rest for o in options]])[0].tolist()


def _rows(
    task: Task, predictions: Sequence[Prediction], examples: Sequence[Example]
) -> tuple[list[int], list[list[float]], list[list[float]], list[list[str]]]:
    by_id = {e.id: e for e in examples}
    index, logits, targets, options = [], [], [], []
    for i, p in enumerate(predictions):
        example = by_id.get(p.example_id)
        if example is None:
            continue
        opts = list(task.options(example) or [])
        z = prediction_logits(p, opts) if p.parsed else None
        if z is None:
            continue
        target = task.target_distribution(example)
        index.append(i)
        logits.append(z)
        targets.append([float(target.get(o, 0.0)) for o in opts])
        options.append(opts)
    return index, logits, targets, options


def fit(task: Task, predictions: Sequence[Prediction], examples: Sequence[Example]) -> tuple[float, int]:
    """The temperature fitted on ``predictions`` (of ``examples``) and the number of predictions it used."""
    _, logits, targets, options = _rows(task, predictions, examples)
    if not logits:
        raise FemError(
            "no calibration prediction has a verdict with a read-out or a confidence",
            field="temperature_scaling",
            fix="use answer_mode: forced (every prediction then has a read-out), or more calibration examples",
        )
    if len({len(o) for o in options}) != 1:
        raise FemError("calibration examples have different option counts", field="temperature_scaling")
    return C.fit_temperature(logits, targets), len(logits)


def apply(
    task: Task, temperature: float, predictions: Sequence[Prediction], examples: Sequence[Example]
) -> list[Prediction]:
    """``predictions`` with each scored verdict's confidence replaced by its temperature-scaled probability."""
    index, logits, _, options = _rows(task, predictions, examples)
    out = list(predictions)
    for i, z, opts in zip(index, logits, options):
        probs = C.scale([z], temperature)[0]
        p = out[i]
        scaled = float(probs[opts.index(p.extracted)])
        info = {**(p.info or {}), "unscaled_confidence": p.confidence, "temperature": temperature}
        out[i] = dataclasses.replace(p, confidence=scaled, info=info)
    return out


def _content(example: Example) -> frozenset[str]:
    """What makes two examples the same item whatever their ids and candidate order."""
    return frozenset(str(v) for k, v in example.fields.items() if k != "swapped_from" and isinstance(v, str) and v)


def check_disjoint(calibration: Sequence[Example], evaluation: Sequence[Example]) -> None:
    """The calibration split must not hold an eval item (in either candidate order): a temperature fitted on the
    eval split would flatter the baseline."""
    seen = {_content(e) for e in evaluation}
    shared = sorted({e.id for e in calibration if _content(e) in seen})
    if shared:
        raise ConfigError(
            f"{len(shared)} temperature-scaling calibration examples are also in the eval split (e.g. {shared[0]})",
            field="train_file",
            fix="use a train_file disjoint from eval_file (the shipped splits are disjoint)",
        )


def temperature_scaling_metrics(
    task: Task,
    calibration: tuple[Sequence[Prediction], Sequence[Example]],
    evaluation: tuple[Sequence[Prediction], Sequence[Example]],
) -> dict[str, Any]:
    """``ts_temperature``, ``ts_calibration_predictions`` and the task's calibration metrics of the scaled eval
    predictions (``ts_<metric>``: ECE of both binnings, Brier, NLL, reliability tables, mean confidence)."""
    temperature, used = fit(task, *calibration)
    scaled = apply(task, temperature, *evaluation)
    metrics = task.metrics(scaled, list(evaluation[1]))
    out: dict[str, Any] = {
        "ts_temperature": temperature if math.isfinite(temperature) else "inf",
        "ts_calibration_predictions": used,
    }
    out.update({f"ts_{k}": v for k, v in metrics.items() if any(m in k for m in SCALED_METRICS)})
    return out
