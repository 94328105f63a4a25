"""Confidence targets and verdict balancing, with a scripted drawer (hand-computed values)."""

from __future__ import annotations

import random

import pytest

from fem.drawing import HINTED, PLAIN, Sample
from fem.estep.confidence import apply_confidence_targets, balance_records, empirical_target
from fem.proposals.base import Cost, Trace
from fem.tasks.base import Example, Prediction


class Drawer:
    """Draw ``a`` of an example reads P(gold) = ``p_plain[id]`` from the plain prompt (0.97 hinted); the verdict is
    sampled from it. The plain read-out without a rationale is ``readout[id]``."""

    def __init__(self, p_plain, readout):
        self.p_plain, self.readout, self.calls = p_plain, readout, []

    def draw(self, examples, origin, n, *, seed):
        self.calls.append((origin, [e.id for e in examples], n))
        rng = random.Random(seed)
        out = []
        for e in examples:
            p = self.p_plain[e.id] if origin == PLAIN else 0.97
            row = []
            for a in range(n):
                verdict = e.answer if rng.random() < p else {"A": "B", "B": "A"}[e.answer]
                conf = p if verdict == e.answer else 1 - p
                info = {"mode": "forced", "option_probs": {e.answer: p, {"A": "B", "B": "A"}[e.answer]: 1 - p}}
                pred = Prediction(e.id, "r", verdict, float(verdict == e.answer), a, conf, info)
                trace = Trace(token_ids=[1], text=f"rationale {origin} {a}", logp=[-1.0], cost=Cost(tokens_decoded=1))
                row.append(Sample(e, origin, a, trace, pred, self.train_completion(trace.text, e, conf)))
            out.append(row)
        return out

    def read_out(self, examples, origin):
        assert origin == PLAIN
        return [
            {e.answer: self.readout[e.id], {"A": "B", "B": "A"}[e.answer]: 1 - self.readout[e.id]} for e in examples
        ]

    def train_completion(self, rationale, example, confidence):
        return f"{rationale}\n\nVerdict: {example.answer}\nConfidence: {round(100 * confidence)}%"


EXAMPLES = [Example("x", "A"), Example("y", "B"), Example("z", "A")]


def OPTIONS(example):
    return ["A", "B"]


def hinted_round(drawer, keep=(True, True, False)):
    draws = drawer.draw(EXAMPLES, HINTED, 2, seed=0)
    for row, k in zip(draws, keep):
        row[0].kept = k and row[0].reward == 1.0
    return draws


def test_plain_readout_trains_the_plain_probability():
    drawer = Drawer(p_plain={"x": 0.5, "y": 0.5, "z": 0.5}, readout={"x": 0.6, "y": 0.25, "z": 0.9})
    draws = hinted_round(drawer)
    assert draws[0][0].kept and draws[0][0].completion.endswith("Confidence: 97%")  # the hinted read-out
    apply_confidence_targets(draws, drawer, target="plain_readout", samples=4, prior=1.0, options=OPTIONS, seed=0)
    assert draws[0][0].completion.endswith("Verdict: A\nConfidence: 60%") and draws[0][0].target_confidence == 0.6
    assert draws[1][0].completion.endswith("Verdict: B\nConfidence: 25%")
    assert draws[2][0].completion.endswith("Confidence: 97%")  # not kept: untouched


def test_readout_keeps_the_draws_own_probability():
    drawer = Drawer(p_plain={"x": 0.5, "y": 0.5, "z": 0.5}, readout={"x": 0.6, "y": 0.25, "z": 0.9})
    draws = hinted_round(drawer)
    apply_confidence_targets(draws, drawer, target="readout", samples=4, prior=1.0, options=OPTIONS, seed=0)
    assert draws[0][0].target_confidence == pytest.approx(0.97) and drawer.calls == [(HINTED, ["x", "y", "z"], 2)]


def test_empirical_is_the_smoothed_expected_success_of_plain_draws():
    assert empirical_target(3, 4, 2, 1.0) == pytest.approx(4 / 6)  # Laplace: (3 + 1) / (4 + 2)
    assert empirical_target(0, 4, 3, 1.0) == pytest.approx((2 / 3) / 6)  # centred on chance 1/3, weight 2 draws
    assert empirical_target(0, 0, 2, 1.0) == 0.5
    drawer = Drawer(p_plain={"x": 0.8, "y": 0.3, "z": 0.5}, readout={"x": 0.6, "y": 0.25, "z": 0.9})
    draws = hinted_round(drawer)
    apply_confidence_targets(draws, drawer, target="empirical", samples=4, prior=1.0, options=OPTIONS, seed=0)
    # four fresh plain draws for the two examples with a kept sample only, recorded but never kept
    assert drawer.calls[1] == (PLAIN, ["x", "y"], 4)
    assert [s.reason for s in draws[0][2:]] == ["confidence"] * 4 and not any(s.kept for s in draws[0][2:])
    assert [s.attempt for s in draws[0]] == list(range(6))
    # forced read-outs: k = sum of P(gold) over the draws = 4 * 0.8 -> (3.2 + 1) / (4 + 2) = 0.7
    assert draws[0][0].target_confidence == pytest.approx(0.7)
    assert draws[0][0].completion.endswith("Confidence: 70%")
    assert draws[1][0].target_confidence == pytest.approx((4 * 0.3 + 1) / 6)


def test_empirical_reuses_the_schemes_plain_draws():
    drawer = Drawer(p_plain={"x": 0.8, "y": 0.3, "z": 0.5}, readout={})
    draws = drawer.draw(EXAMPLES, PLAIN, 4, seed=0)  # rejection / STaR made four plain draws already
    for row in draws:
        row[0].kept = True
    apply_confidence_targets(draws, drawer, target="empirical", samples=4, prior=1.0, options=OPTIONS, seed=0)
    assert len(drawer.calls) == 1 and all(len(row) == 4 for row in draws)
    # generate-mode draws (no read-out): the 0/1 rewards are counted
    for s in draws[2]:
        s.prediction.info = {}
    draws[2][0].kept = True
    apply_confidence_targets(draws, drawer, target="empirical", samples=4, prior=1.0, options=OPTIONS, seed=0)
    assert draws[2][0].target_confidence == pytest.approx((sum(s.reward for s in draws[2]) + 1) / 6)


def _record(eid, attempt, gold, kept=True):
    return {"example_id": eid, "attempt": attempt, "gold": gold, "kept": kept, "reason": None if kept else "reward"}


def test_balance_drops_the_majority_verdicts_excess_reproducibly():
    records = [_record(f"a{i}", 0, "A") for i in range(5)] + [_record(f"b{i}", 0, "B") for i in range(2)]
    records.append(_record("b9", 1, "B", kept=False))
    out, info = balance_records(records, seed=3)
    kept = [r for r in out if r["kept"]]
    assert sum(r["gold"] == "A" for r in kept) == sum(r["gold"] == "B" for r in kept) == 2
    assert info == {"kept_by_gold": {"A": 2, "B": 2}, "dropped": 3, "balanced": True}
    assert sum(r["reason"] == "balance" for r in out) == 3 and out[-1]["reason"] == "reward"
    assert balance_records(records, seed=3)[0] == out  # seeded
    again, info_again = balance_records(out, seed=99)
    assert again == out and info_again == info  # idempotent: a resumed E-step reports the same counts
    only_a = [_record("a", 0, "A"), _record("b", 0, "A")]
    assert balance_records(only_a, seed=0) == (only_a, {"kept_by_gold": {"A": 2}, "dropped": 0, "balanced": False})


def _swap(example):
    return Example(example.id + ":s", {"A": "B", "B": "A"}[example.answer])


def test_plain_readout_debiased_averages_the_gold_candidate_over_both_orders():
    # x (gold A) reads P(gold) 0.7 as given and 0.9 swapped; y (gold B) 0.2 and 0.4
    drawer = Drawer(p_plain={}, readout={"x": 0.7, "x:s": 0.9, "y": 0.2, "y:s": 0.4, "z": 0.5, "z:s": 0.5})
    reads = []
    read_out = drawer.read_out
    drawer.read_out = lambda examples, origin: reads.append([e.id for e in examples]) or read_out(examples, origin)
    draws = hinted_round(drawer)
    kwargs = dict(samples=4, prior=1.0, options=OPTIONS, seed=0)
    apply_confidence_targets(draws, drawer, target="plain_readout_debiased", swap=_swap, **kwargs)
    assert draws[0][0].target_confidence == pytest.approx(0.8) and draws[0][0].completion.endswith("Confidence: 80%")
    assert draws[1][0].target_confidence == pytest.approx(0.3)
    assert reads == [["x", "y", "x:s", "y:s"]]  # both orders in one read-out call, only rows with a kept sample
    with pytest.raises(ValueError, match="needs the task's swap"):
        apply_confidence_targets(draws, drawer, target="plain_readout_debiased", **kwargs)
