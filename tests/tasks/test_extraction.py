import pytest

from fem.configs import TaskConfig
from fem.readout import score_completions
from fem.tasks import build_task
from fem.tasks.base import Example
from fem.tasks.choice import parse_choice
from fem.tasks.judge import parse_confidence, parse_verdict
from fem.tasks.math import final_answer, last_boxed


def test_boxed_nested_last_and_missing():
    assert last_boxed(r"so \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"first \boxed{3} then \boxed{x^{2}+1}") == "x^{2}+1"
    assert last_boxed("no answer here") is None
    assert last_boxed(r"\boxed{1} and a truncated \boxed{2") is None
    assert final_answer("#### 1,234") == "1234"
    assert final_answer("So the answer is $42$.") == "42"
    assert final_answer("") is None


def test_math_reward_via_math_verify():
    task = build_task(TaskConfig(task="gsm8k"))
    ex = Example(id="x", answer="72")
    assert task.reward(task.extract(r"The answer is \boxed{72.0}."), ex) == 1.0
    assert task.reward(task.extract(r"\boxed{71}"), ex) == 0.0
    math500 = build_task(TaskConfig(task="math500"))
    ex2 = Example(id="y", answer=r"\frac{1}{2}")
    assert math500.reward(math500.extract(r"The answer is \boxed{0.5}"), ex2) == 1.0
    assert math500.reward(math500.extract(r"The answer is \boxed{\dfrac12}"), ex2) == 1.0


def test_verdict_and_confidence_parsing():
    assert parse_verdict("blah\nVerdict: B\nConfidence: 70%") == "B"
    assert parse_verdict("Verdict: A ... Verdict: **B**") == "B"
    assert parse_verdict("Verdict: tie") is None
    assert parse_verdict("Verdict: tie", allow_tie=True) == "tie"
    assert parse_confidence("Confidence: 85%") == pytest.approx(0.85)
    assert parse_confidence("Confidence: 0.7") == pytest.approx(0.7)
    assert parse_confidence("Confidence: 150%") is None
    assert parse_confidence("Confidence: high") is None


@pytest.mark.parametrize(
    "completion",
    [
        "I think A is better.",
        "Verdict: A",
        "Confidence: 80%",
        "Verdict: A\nConfidence: lots",
        "Verdict: C\nConfidence: 90%",
        "Verdict: A\nConfidence: 250%",
    ],
)
def test_judge_malformed_is_unparsed_reward_zero(completion):
    task = build_task(TaskConfig(task="judge"))
    ex = Example(id="e", answer="A", fields={"prompt": "p", "response_a": "a", "response_b": "b"})
    [pred] = score_completions(task, None, [ex], [completion], "generate")
    assert pred.reward == 0.0 and not pred.parsed
    assert task.metrics([pred], [ex])["unparsed"] == 1


def test_judge_generate_parsed_with_confidence():
    task = build_task(TaskConfig(task="judge"))
    ex = Example(id="e", answer="B", fields={"prompt": "p", "response_a": "a", "response_b": "b"})
    [pred] = score_completions(task, None, [ex], ["B is more accurate.\nVerdict: B\nConfidence: 80%"], "generate")
    assert pred.reward == 1.0 and pred.confidence == pytest.approx(0.8)


def test_choice_parsing():
    assert parse_choice("Hmm. The answer is (C).") == "C"
    assert parse_choice("Answer: B") == "B"
    assert parse_choice("The answer is (A). Wait, the answer is (D)") == "D"
    assert parse_choice("I am not sure") is None


def test_math_unparsed_counted():
    task = build_task(TaskConfig(task="gsm8k"))
    ex = Example(id="e", answer="3")
    preds = score_completions(task, None, [ex, ex], ["no idea", r"\boxed{3}"], "generate", sample_indices=[0, 1])
    m = task.metrics(preds, [ex])
    assert m["unparsed"] == 1 and m["accuracy"] == 0.5 and m["pass@2"] == 1.0 and m["pass@1"] == 0.5
    assert m["maj@2"] == 1.0
