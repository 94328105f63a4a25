"""Pairwise evaluation asks each pair both ways and reports position consistency."""

from __future__ import annotations

from fem.configs import TaskConfig
from fem.eval.evaluate import eval_examples
from fem.tasks import build_task
from fem.tasks.base import Prediction


def test_judge_eval_examples_include_swapped_pairs():
    task = build_task(TaskConfig(task="judge", eval_limit=3))
    examples = task.load("eval")
    both = eval_examples(task, examples, position_swap=True)
    assert [e.id for e in both[::2]] == [e.id for e in examples]
    assert all(s.id == f"{e.id}:swapped" and s.answer != e.answer for e, s in zip(both[::2], both[1::2]))
    assert eval_examples(task, examples, position_swap=False) == examples
    math = build_task(TaskConfig(task="gsm8k", eval_limit=3))
    assert eval_examples(math, math.load("eval"), position_swap=True) == math.load("eval")


def test_position_consistency_counts_verdicts_naming_the_same_candidate():
    task = build_task(TaskConfig(task="judge", eval_limit=2))
    examples = eval_examples(task, task.load("eval"), position_swap=True)
    a, a_swapped, b, b_swapped = examples
    flip = {"A": "B", "B": "A"}
    predictions = [
        Prediction(a.id, "", a.answer, 1.0, confidence=0.9),
        Prediction(a_swapped.id, "", flip[a.answer], 0.0, confidence=0.9),  # same candidate both times
        Prediction(b.id, "", "A", float(b.answer == "A"), confidence=0.6),
        Prediction(b_swapped.id, "", "A", float(b_swapped.answer == "A"), confidence=0.6),  # position bias
    ]
    metrics = task.metrics(predictions, examples)
    assert metrics["position_pairs"] == 2 and metrics["position_consistency"] == 0.5
