"""Temperature scaling on prediction records: hand-computed fits, a known temperature recovered, TL;DR targets."""

from __future__ import annotations

import math
import random

import pytest

from fem.configs import TaskConfig
from fem.eval.scaling import apply, fit, prediction_logits, temperature_scaling_metrics
from fem.tasks import build_task
from fem.tasks.base import Example, Prediction


def forced(example: Example, p_a: float) -> Prediction:
    """A forced read-out: P(A) = p_a, the verdict its argmax."""
    verdict = "A" if p_a >= 0.5 else "B"
    return Prediction(
        example.id,
        "",
        verdict,
        float(verdict == example.answer),
        confidence=max(p_a, 1 - p_a),
        info={"option_probs": {"A": p_a, "B": 1 - p_a}},
    )


def test_hand_computed_fit_and_scaled_metrics():
    task = build_task(TaskConfig(task="judge"))
    examples = [Example("a", "A"), Example("b", "A"), Example("c", "B")]
    predictions = [forced(e, 0.8) for e in examples]  # read-out 0.8 for A each time, right on two of three
    temperature, used = fit(task, predictions, examples)
    assert temperature == pytest.approx(2.0) and used == 3  # sigmoid(ln 4 / T) = 2/3
    metrics = temperature_scaling_metrics(task, (predictions, examples), (predictions, examples))
    assert metrics["ts_temperature"] == pytest.approx(2.0)
    assert metrics["ts_mean_confidence"] == pytest.approx(2 / 3) and metrics["ts_ece"] == pytest.approx(0.0)
    assert metrics["ts_brier"] == pytest.approx((2 * (1 / 3) ** 2 + (2 / 3) ** 2) / 3)
    assert metrics["ts_nll"] == pytest.approx(-(2 * math.log(2 / 3) + math.log(1 / 3)) / 3)
    assert "ts_accuracy" not in metrics  # a temperature changes no verdict


def test_stated_confidence_without_read_out_and_unparsed_predictions():
    p = Prediction("a", "Verdict: B\nConfidence: 70%", "B", 1.0, confidence=0.7)
    assert prediction_logits(p, ["A", "B"]) == pytest.approx([math.log(0.3), math.log(0.7)])
    assert prediction_logits(Prediction("a", "", None, 0.0), ["A", "B"]) is None
    task = build_task(TaskConfig(task="judge"))
    examples = [Example("a", "B"), Example("b", "A")]
    preds = [p, Prediction("b", "rambling", None, 0.0)]
    scaled = apply(task, 2.0, preds, examples)
    assert scaled[0].confidence == pytest.approx(1 / (1 + (0.3 / 0.7) ** 0.5)) and scaled[1] == preds[1]
    assert scaled[0].info["unscaled_confidence"] == 0.7


def test_a_known_temperature_is_recovered_from_read_outs():
    task = build_task(TaskConfig(task="judge"))
    rng = random.Random(0)
    examples, predictions = [], []
    for i in range(6000):  # the model's logit gap z; the truth follows sigmoid(z / 3): the read-out is overconfident
        z = rng.gauss(0, 4)
        gold = "A" if rng.random() < 1 / (1 + math.exp(-z / 3)) else "B"
        e = Example(f"e{i}", gold)
        examples.append(e)
        predictions.append(forced(e, 1 / (1 + math.exp(-z))))
    temperature, _ = fit(task, predictions, examples)
    assert temperature == pytest.approx(3.0, rel=0.08)
    before = task.metrics(predictions, examples)
    after = temperature_scaling_metrics(task, (predictions, examples), (predictions, examples))
    assert after["ts_nll"] < before["nll"] and after["ts_ece"] < before["ece"] / 3


def test_summarize_fits_the_human_confidence_target():
    task = build_task(TaskConfig(task="summarize"))
    example = Example("t", "B", {"human_confidence": 7})  # P_human(B) = 6.5 / 9
    assert task.target_distribution(example) == pytest.approx({"A": 2.5 / 9, "B": 6.5 / 9})
    temperature, _ = fit(task, [forced(example, 0.2)], [example])  # read-out P(B) = 0.8
    assert temperature == pytest.approx(math.log(4) / math.log(6.5 / 2.5))
