"""Confidence targets of pairwise tasks' training completions, and verdict balancing of a round's kept samples.

A kept sample is trained as ``rationale + "Verdict: <gold>" + "Confidence: N%"``. ``confidence_target`` says what N is:

- ``readout``: the kept draw's own read-out probability of its verdict. Under PPS (STaR's rationalizations too) the
  draw saw the gold verdict in its prompt, so N is near 100 % whatever the pair: it teaches overconfidence.
- ``plain_readout``: the probability the model gives the gold verdict from the *plain* prompt with no rationale
  (the cue right after the prompt). One forward pass per example; deterministic. It carries the model's position
  bias: a model that answers "A" with 0.8 whatever the pair trains 80 % on every gold-A pair and 20 % on every
  gold-B pair.
- ``plain_readout_debiased`` (pairwise tasks): the probability of the gold *candidate* averaged over both
  presentation orders, ``(P(gold | pair as given) + P(swapped gold | swapped pair)) / 2``, both plain read-outs.
  The "always A at 0.8" model gets 0.5 on every pair; a pair read 0.7 as given and 0.9 swapped trains 80 %. Two
  forward passes per example, one when the swapped copy is drawn too (``estep_position_swap``: identical prompts are
  read once).
- ``empirical``: the posterior mean of P(correct) from ``m = confidence_samples`` plain draws (the scheme's own
  plain draws when it made them, fresh ones otherwise): ``(k + 2a/K) / (m + 2a)`` with ``K`` options and
  ``a = confidence_prior``. ``k`` sums, over the draws, the probability that the draw's verdict is right: its
  read-out of the gold verdict in forced mode (the Rao-Blackwellized count: same mean as counting sampled
  verdicts, lower variance), its 0/1 reward in generate mode. The prior is Beta(2a/K, 2a(K-1)/K): centred on
  chance (a judge that has seen no evidence states 1/K) with the weight of 2a draws; a = 1 is Laplace's rule of
  succession, whose posterior mean minimizes the expected Brier score of a single example's estimate, and which
  never states 0 % or 100 % from a handful of draws (the NLL of a wrong 100 % is unbounded).

``empirical`` is not debiased: its plain draws are rationales written in one order, and averaging orders would
need as many draws again of the swapped copy (the costliest part of the target), each recorded under an example that
is not in the round. Extra plain draws made for ``empirical`` are recorded with ``reason: "confidence"`` (never
trained). A draw kept without the reward filter with a wrong or unparsed answer (``reward_filter: false``) keeps its
own completion: its own verdict with its own read-out confidence (a target about the gold verdict would contradict
the verdict).

``balance_records`` keeps the same number of kept samples per gold verdict in a round (the majority verdicts'
excess is dropped, chosen by a seeded shuffle, and marked ``reason: "balance"``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fem.configs.choices import CONFIDENCE_TARGETS as TARGETS
from fem.drawing import PLAIN, Sample
from fem.tasks.base import Example

DEBIASED = "plain_readout_debiased"


class TargetDrawer(Protocol):
    """What the targets need from a drawer: plain draws, a plain read-out, and the training completion."""

    def draw(self, examples: Sequence[Example], origin: str, n: int, *, seed: int) -> list[list[Sample]]: ...

    def read_out(self, examples: Sequence[Example], origin: str) -> list[dict[str, float]]: ...

    def train_completion(self, rationale: str, example: Example, confidence: float | None) -> str: ...


def empirical_target(successes: float, draws: int, n_options: int, prior: float) -> float:
    """Posterior mean of P(correct) after ``successes`` of ``draws`` under a Beta prior centred on ``1/n_options``
    with the weight of ``2 * prior`` draws."""
    return (successes + 2 * prior / n_options) / (draws + 2 * prior)


def draw_success(sample: Sample) -> float:
    """The probability that a draw's verdict is right: the read-out of the gold verdict when the draw was read
    through the cue (forced mode), else its reward."""
    probs = sample.prediction.info.get("option_probs") if sample.prediction.info else None
    if isinstance(probs, dict) and sample.example.answer in probs:
        return float(probs[sample.example.answer])
    return float(sample.reward)


def apply_confidence_targets(
    draws: list[list[Sample]],
    drawer: TargetDrawer,
    *,
    target: str,
    samples: int,
    prior: float,
    options: Callable[[Example], Sequence[str] | None],
    seed: int,
    swap: Callable[[Example], Example] | None = None,
) -> None:
    """Set ``target_confidence`` and rebuild the completion of every kept sample in ``draws`` (one list per
    example; ``options(example)``: its answer options; ``swap(example)``: the same pair with its candidates
    exchanged and its gold verdict swapped, needed by ``plain_readout_debiased``); ``empirical`` may append plain
    draws."""
    if target not in TARGETS:
        raise ValueError(f"unknown confidence target '{target}' (one of {', '.join(TARGETS)})")
    if target == DEBIASED and swap is None:
        raise ValueError(f"confidence target {DEBIASED} needs the task's swap (a pairwise task)")
    rows = [i for i, row in enumerate(draws) if any(s.kept and not s.own_target for s in row)]
    if not rows:
        return
    values: dict[int, float] = {}
    if target in ("plain_readout", DEBIASED):
        examples = [draws[i][0].example for i in rows]
        if target == DEBIASED:
            assert swap is not None
            examples += [swap(e) for e in examples]  # one read-out call: both orders batched together
        probs = [float(p.get(e.answer, 0.0)) for e, p in zip(examples, drawer.read_out(examples, PLAIN))]
        if target == DEBIASED:
            probs = [(given + swapped) / 2 for given, swapped in zip(probs, probs[len(rows) :])]
        values = dict(zip(rows, probs))
    elif target == "empirical":
        _add_plain_draws(draws, rows, drawer, samples, seed)
        for i in rows:
            plain = [s for s in draws[i] if s.origin == PLAIN][:samples]
            k = sum(draw_success(s) for s in plain)
            values[i] = empirical_target(k, len(plain), max(len(options(draws[i][0].example) or ()), 1), prior)
    for i in rows:
        for s in draws[i]:
            if not s.kept or s.own_target:
                continue
            s.target_confidence = s.prediction.confidence if target == "readout" else values[i]
            s.completion = drawer.train_completion(s.trace.text, s.example, s.target_confidence)


def _add_plain_draws(draws: list[list[Sample]], rows: list[int], drawer: TargetDrawer, m: int, seed: int) -> None:
    """Top up each row to ``m`` plain draws (one drawer call per missing count); the extra draws are not kept."""
    missing: dict[int, list[int]] = {}
    for i in rows:
        need = m - sum(s.origin == PLAIN for s in draws[i])
        if need > 0:
            missing.setdefault(need, []).append(i)
    for need, which in sorted(missing.items()):
        extra = drawer.draw([draws[i][0].example for i in which], PLAIN, need, seed=seed + 7919 * need)
        for i, new in zip(which, extra):
            offset = len(draws[i])
            for s in new:
                s.attempt += offset
                s.kept, s.reason = False, "confidence"
            draws[i].extend(new)


def balance_records(records: list[dict[str, Any]], seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The same records with kept samples balanced across gold verdicts (``gold``), and what was done.

    Every gold verdict among the kept samples keeps as many as the rarest one; the excess of the others, chosen
    by a shuffle seeded with ``seed``, becomes ``kept: false, reason: "balance"``. Idempotent. Nothing is dropped
    when only one verdict has kept samples (``balanced: false``): equal counts would mean training on nothing.
    """
    kept = [i for i, r in enumerate(records) if r.get("kept")]
    by_gold: dict[str, list[int]] = {}
    for i in kept:
        by_gold.setdefault(str(records[i].get("gold")), []).append(i)
    out = records
    if len(by_gold) > 1:
        floor = min(len(v) for v in by_gold.values())
        rng = random.Random(seed)
        drop: set[int] = set()
        for _, members in sorted(by_gold.items()):
            order = sorted(members, key=lambda i: (records[i]["example_id"], records[i]["attempt"]))
            rng.shuffle(order)
            drop.update(order[floor:])
        out = [{**r, "kept": False, "reason": "balance"} if i in drop else r for i, r in enumerate(records)]
    counts: dict[str, int] = {}
    for r in out:
        if r.get("kept"):
            counts[str(r.get("gold"))] = counts.get(str(r.get("gold")), 0) + 1
    info = {
        "kept_by_gold": dict(sorted(counts.items())),
        "dropped": sum(r.get("reason") == "balance" for r in out),  # this call's and any earlier call's
        "balanced": len(by_gold) > 1,
    }
    return out, info
