"""The pairwise E-step on hand-built cases: the real forced read-out behind ``plain_readout`` and stated
confidences, position swap and verdict balancing through the chunked runner."""

from __future__ import annotations

import math
import re

import pytest
import torch

from fem.configs import EStepConfig, TaskConfig
from fem.drawing import HINTED, ProposalDrawer
from fem.estep.confidence import apply_confidence_targets
from fem.estep.runner import check_samples, kept_samples, run_estep
from fem.estep.schemes import PPSScheme
from fem.generation.base import Continuation, DecodeStats
from fem.proposals.base import Cost, Trace
from fem.readout import option_probabilities, score_completions
from fem.tasks import build_task
from fem.tasks.answering import training_completion
from fem.tasks.base import Example
from fem.utils.distributed import World


class CharBackend:
    """Character-level backend (token id = ord): after any prefix P(A) : P(B) = ``p_a`` : 1 - ``p_a`` (every other
    character keeps a small mass, which the read-out renormalizes away); greedy generation writes ``script``."""

    vocab_size = 256
    eos_token_ids = frozenset({0})

    def __init__(self, p_a: float, script: str = ""):
        self.p_a, self.script = p_a, script

    def encode(self, text):
        return [ord(c) % 256 for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def next_token_logprobs(self, prefixes):
        logits = torch.full((len(prefixes), self.vocab_size), -5.0)
        logits[:, ord("A")], logits[:, ord("B")] = math.log(self.p_a), math.log(1 - self.p_a)
        return torch.log_softmax(logits, dim=-1)

    def generate(self, prefixes, params, max_new_tokens, *, generator=None, stop_callback=None):
        out = []
        for row, _ in enumerate(prefixes):
            cont = Continuation()
            for ch in (self.script + "\0")[:max_new_tokens]:
                cont.token_ids.append(ord(ch))
                cont.logp.append(0.0)
                if ch == "\0":
                    cont.finished = True
                    break
                if stop_callback and stop_callback(row, cont):
                    break
            out.append(cont)
        return out, DecodeStats()


class FixedProposal:
    """Every trace is the same short rationale."""

    name = "fixed"

    def propose(self, prompts, num_samples=1, *, seed=0):
        trace = Trace(token_ids=[1], text="Both answer the question.", logp=[-1.0], cost=Cost(tokens_decoded=1))
        return [[trace] * num_samples for _ in prompts]


def judge_drawer(backend, *, sample=False, confidence="readout"):
    """The production ProposalDrawer on the judge task, with the real forced read-out on ``backend``."""
    import random

    task = build_task(TaskConfig(task="judge"))

    def score(examples, prompts, texts, seed):
        rng = random.Random(seed) if sample else None
        return score_completions(
            task, backend, examples, texts, "forced", prompt_ids=prompts, rng=rng, confidence=confidence
        )

    return task, ProposalDrawer(
        task=task,
        proposal=FixedProposal(),
        render=lambda e, origin: backend.encode(e.fields["prompt"] + (" (hint)" if origin == HINTED else "")),
        score=score,
        train_completion=lambda r, e, c=None: training_completion(task, r, e, c),
        read_options=lambda examples, prompts: option_probabilities(task, backend, examples, prompts),
    )


def pair(i: int, gold: str) -> Example:
    return Example(f"p{i}", gold, {"prompt": f"Question {i}?", "response_a": f"one {i}", "response_b": f"two {i}"})


def test_a_pair_whose_plain_read_out_is_0_6_trains_confidence_60():
    task, drawer = judge_drawer(CharBackend(p_a=0.6))
    example = pair(0, "A")
    assert drawer.read_out([example], "plain")[0] == pytest.approx({"A": 0.6, "B": 0.4})
    draws = drawer.draw([example], HINTED, 1, seed=0)
    draws[0][0].kept = True
    apply_confidence_targets(draws, drawer, target="plain_readout", samples=4, prior=1.0, options=task.options, seed=0)
    assert draws[0][0].target_confidence == pytest.approx(0.6)
    assert draws[0][0].completion == "Both answer the question.\n\nVerdict: A\nConfidence: 60%"
    gold_b = pair(1, "B")  # the same read-out is a 40 % confidence in a gold verdict B
    draws = drawer.draw([gold_b], HINTED, 1, seed=0)
    draws[0][0].kept = True
    apply_confidence_targets(draws, drawer, target="plain_readout", samples=4, prior=1.0, options=task.options, seed=0)
    assert draws[0][0].completion.endswith("Verdict: B\nConfidence: 40%")


def test_stated_confidence_is_what_the_model_writes_after_the_forced_verdict():
    task, drawer = judge_drawer(CharBackend(p_a=0.6, script=" 85% sure"), confidence="stated")
    (sample,) = drawer.draw([pair(0, "A")], "plain", 1, seed=0)[0]
    p = sample.prediction
    assert p.extracted == "A" and p.confidence == pytest.approx(0.85)
    assert p.info["readout"] == pytest.approx(0.6) and p.info["stated"] == " 85%"
    _, mute = judge_drawer(CharBackend(p_a=0.6, script=" maybe\n"), confidence="stated")
    (sample,) = mute.draw([pair(0, "A")], "plain", 1, seed=0)[0]
    assert sample.prediction.extracted == "A" and sample.prediction.confidence is None  # no confidence stated
    assert task.metrics([sample.prediction], [pair(0, "A")])["parsed_fraction"] == 0.0


def test_swap_draws_both_orders_and_balance_equalizes_kept_verdicts(tmp_path):
    # a judge with a position bias: P(A) = 0.9 after every prompt, so gold-A pairs are kept far more often
    task, drawer = judge_drawer(CharBackend(p_a=0.9), sample=True)
    pairs = [pair(i, "A" if i % 3 else "B") for i in range(12)]
    examples = task.with_swaps(pairs)
    assert [e.id for e in examples[:2]] == ["p0", "p0:swapped"] and examples[1].answer == "A"
    assert examples[1].fields["response_a"] == pairs[0].fields["response_b"]
    kwargs = dict(
        round_index=0,
        examples=examples,
        scheme=PPSScheme(EStepConfig(scheme="pps", estep_samples=2, estep_max_keep=1)),
        drawer=drawer,
        proposal_name="fixed",
        chunk_size=8,
        seed=3,
        world=World(),
        save_rejected=True,
        targets=lambda draws, seed: apply_confidence_targets(
            draws, drawer, target="readout", samples=1, prior=1.0, options=task.options, seed=seed
        ),
    )
    unbalanced = run_estep(round_dir=tmp_path / "plain", **kwargs)
    kept = kept_samples(tmp_path / "plain")
    gold = [s["gold"] for s in kept]
    assert gold.count("A") > gold.count("B") > 0  # the position bias shows in what is kept
    assert {s["example_id"].removesuffix(":swapped") for s in kept} <= {p.id for p in pairs}
    assert any(s["example_id"].endswith(":swapped") for s in kept)
    assert unbalanced["estep/kept_gold_A"] == gold.count("A")

    balanced = run_estep(round_dir=tmp_path / "balanced", balance_seed=11, **kwargs)
    kept = kept_samples(tmp_path / "balanced")
    gold = [s["gold"] for s in kept]
    assert gold.count("A") == gold.count("B") == unbalanced["estep/kept_gold_B"]
    assert balanced["estep/kept_samples"] == len(kept) and balanced["estep/balance_dropped"] > 0
    assert balanced["estep/kept_gold_A"] == balanced["estep/kept_gold_B"]
    mean_target = sum(s["target_confidence"] for s in kept) / len(kept)
    assert balanced["estep/mean_target_confidence"] == pytest.approx(mean_target)  # of what is trained
    resumed = run_estep(round_dir=tmp_path / "balanced", balance_seed=11, **kwargs)  # every chunk already done
    assert resumed == balanced and kept_samples(tmp_path / "balanced") == kept
    # balancing leaves samples.jsonl as drawn: the pre-M-step check against the E-step's record still holds
    assert check_samples(tmp_path / "balanced", num_chunks=3) == []
    assert len(kept_samples(tmp_path / "plain")) > len(kept)


class OrderBackend(CharBackend):
    """P(A) after a prompt is ``p_a[first]``, ``first`` the candidate shown first in it (the prompt names both)."""

    def __init__(self, p_a: dict[str, float]):
        super().__init__(p_a=0.5)
        self.table, self.prompts = p_a, []

    def next_token_logprobs(self, prefixes):
        rows = []
        for prefix in prefixes:
            text = self.decode(prefix)
            self.prompts.append(text)
            first = min(self.table, key=lambda c: text.find(c) if c in text else len(text))
            self.p_a = self.table[first]
            rows.append(super().next_token_logprobs([prefix])[0])
        return torch.stack(rows)


def pair_drawer(backend):
    """The judge drawer on ``backend`` with prompts that show both candidates in their order."""
    task, drawer = judge_drawer(backend)
    drawer.render = lambda e, origin: backend.encode(f"{e.fields['response_a']} | {e.fields['response_b']}")
    return task, drawer


def kept_target(task, drawer, example, target):
    draws = drawer.draw([example], HINTED, 1, seed=0)
    draws[0][0].kept = True
    apply_confidence_targets(
        draws, drawer, target=target, samples=4, prior=1.0, options=task.options, seed=0, swap=task.swapped
    )
    return draws[0][0]


def test_debiased_target_gives_a_judge_that_always_says_a_at_0_8_a_half_on_every_pair():
    task, drawer = pair_drawer(CharBackend(p_a=0.8))
    for gold in ("A", "B"):
        biased = kept_target(task, drawer, pair(0, gold), "plain_readout")
        assert biased.target_confidence == pytest.approx(0.8 if gold == "A" else 0.2)
        sample = kept_target(task, drawer, pair(0, gold), "plain_readout_debiased")
        assert sample.target_confidence == pytest.approx(0.5)
        assert sample.completion.endswith(f"Verdict: {gold}\nConfidence: 50%")


def test_debiased_target_of_a_pair_read_0_7_as_given_and_0_9_swapped_trains_80():
    # gold A = "one 0": shown first it gets P(A) = 0.7; swapped, "two 0" comes first and P(B) = P(one 0) = 0.9
    backend = OrderBackend({"one 0": 0.7, "two 0": 0.1})
    task, drawer = pair_drawer(backend)
    sample = kept_target(task, drawer, pair(0, "A"), "plain_readout_debiased")
    assert sample.target_confidence == pytest.approx(0.8)
    assert sample.completion == "Both answer the question.\n\nVerdict: A\nConfidence: 80%"
    assert kept_target(task, drawer, pair(0, "A"), "plain_readout").target_confidence == pytest.approx(0.7)
    # the pair and its swapped copy both kept (estep_position_swap): the same two prompts, each read once
    draws = drawer.draw(task.with_swaps([pair(0, "A")]), HINTED, 1, seed=0)
    for row in draws:
        row[0].kept = True
    backend.prompts.clear()
    apply_confidence_targets(
        draws, drawer, target="plain_readout_debiased", samples=4, prior=1.0, options=task.options, seed=0,
        swap=task.swapped,
    )  # fmt: skip
    assert [row[0].target_confidence for row in draws] == pytest.approx([0.8, 0.8])
    assert sorted(backend.prompts) == ["one 0 | two 0Verdict: ", "two 0 | one 0Verdict: "]


@pytest.mark.parametrize("target", ["plain_readout", "empirical", "readout"])
def test_a_confidence_target_on_a_task_that_states_none_is_a_one_line_config_error(capsys, target):
    from fem.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--config", "recipes/smoke/tiny_cpu.yaml", "--confidence_target", target, "--dry_run"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "model shards" not in line]
    assert info.value.code == 2 and len(err) == 1, err  # (the tiny model is written on first use: not an error)
    assert "task 'toy_parity' states no confidence" in err[0] and "confidence_target" in err[0]


def test_the_default_target_is_debiased_and_a_task_that_states_no_confidence_runs_with_it(capsys):
    from fem.cli import main
    from fem.configs import EStepConfig

    assert EStepConfig().confidence_target == "plain_readout_debiased"  # chosen on held-out pairs (section 9b)
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", "recipes/smoke/tiny_cpu.yaml", "--dry_run"])
    assert (
        info.value.code == 0 and "Confidence" not in capsys.readouterr().out
    )  # the plan names no target for a task without one


def test_the_debiased_target_on_a_task_that_states_a_confidence_but_is_not_pairwise_is_refused(monkeypatch):
    from fem import preflight
    from fem.errors import ConfigError
    from fem.recipe import parse_configs

    configs = parse_configs(["--config", "recipes/smoke/tiny_cpu.yaml"])
    task = preflight.build_task(configs.task)
    monkeypatch.setattr(type(task), "confidence_cue", "\nConfidence:")  # a future non-pairwise task with a confidence
    with pytest.raises(ConfigError, match="is not pairwise .plain_readout_debiased averages both orders"):
        preflight.check_pairwise_options(configs)


class NumberBackend(CharBackend):
    """After ``Confidence:`` + ``tail`` the next character's probabilities are ``table[tail]`` (unlisted digits and
    ``%`` get none, every other character a little); before it, P(A) = 0.6; greedy generation writes ``script``."""

    def __init__(self, table, script):
        super().__init__(p_a=0.6, script=script)
        self.table, self.rows_read = table, 0

    def next_token_logprobs(self, prefixes):
        rows = super().next_token_logprobs(prefixes)
        for i, prefix in enumerate(prefixes):
            text = self.decode(prefix)
            if "Confidence:" in text:
                self.rows_read += 1
                probs = self.table.get(text.rsplit("Confidence:", 1)[1], {})
                for ch in "0123456789%":
                    rows[i, ord(ch)] = math.log(probs[ch]) if ch in probs else -1e9
        return rows


def test_stated_mean_is_the_expected_number_under_constrained_decoding():
    table = {
        " ": {"7": 0.5, "1": 0.25, "0": 0.25},
        " 7": {"%": 0.2, "5": 0.8},  # 7 or 75
        " 1": {"%": 0.5, "0": 0.5},  # 1, or 10 / 100
        " 10": {"%": 0.5, "0": 0.5},
        " 0": {"%": 0.1, "5": 0.9},  # "05" is not a number: 0 for sure
    }
    backend = NumberBackend(table, script=" 75%")
    _, drawer = judge_drawer(backend, confidence="stated_mean")
    (sample,) = drawer.draw([pair(0, "A")], "plain", 1, seed=0)[0]
    p = sample.prediction
    # 0.5 * (0.2 * 7 + 0.8 * 75) + 0.25 * (0.5 * 1 + 0.5 * (0.5 * 10 + 0.5 * 100)) + 0.25 * 0 = 37.7
    assert p.confidence == pytest.approx(0.377) and p.info["stated_mean"] == pytest.approx(0.377)
    assert p.info["stated_value"] == pytest.approx(0.75) and p.info["stated"] == " 75%"  # the greedy line
    assert p.info["readout"] == pytest.approx(0.6) and backend.rows_read == 11


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({" ": {"1": 1.0}, " 1": {"0": 1.0}, " 10": {"0": 1.0}}, 1.0),  # always 100
        ({" ": {"0": 1.0}}, 0.0),  # always 0
        ({" ": {"5": 1.0}, " 5": {"%": 0.5, "0": 0.25, "9": 0.25}}, 0.5 * 0.05 + 0.25 * 0.5 + 0.25 * 0.59),
        ({" ": {str(d): 0.1 for d in range(10)}, **{f" {d}": {"%": 1.0} for d in range(1, 10)}}, 0.045),  # 0..9
    ],
)
def test_stated_mean_on_hand_computed_tables(table, expected):
    backend = NumberBackend(table, script=" 50%")
    _, drawer = judge_drawer(backend, confidence="stated_mean")
    draws = drawer.draw([pair(i, "AB"[i % 2]) for i in range(3)], "plain", 1, seed=0)  # 33 rows, in 3 calls of <= 16
    assert [row[0].prediction.confidence for row in draws] == pytest.approx([expected] * 3)
    assert backend.rows_read == 33


def test_stated_mean_refuses_a_tokenizer_that_does_not_write_numbers_digit_by_digit():
    from fem.errors import FemError

    class Merged(NumberBackend):
        def encode(self, text):
            return [200 if tok == "10" else ord(tok) for tok in re.findall(r"10|.", text, flags=re.S)]

    _, drawer = judge_drawer(Merged({}, script=" 10%"), confidence="stated_mean")
    with pytest.raises(FemError, match=r"digit by digit: '\\nConfidence: 10%' encodes as \[10, 67"):
        drawer.draw([pair(0, "A")], "plain", 1, seed=0)


def test_a_draw_kept_unfiltered_keeps_its_own_verdict_and_confidence():
    """reward_filter: false: a wrong draw is trained on its own verdict with its own read-out confidence; the
    confidence target (about the gold verdict) is not written into it, while a correct draw still gets it."""
    from fem.estep.schemes import select

    task, drawer = judge_drawer(CharBackend(p_a=0.6))
    config = EStepConfig(scheme="rejection", estep_samples=1, estep_max_keep=1, reward_filter=False)
    draws = drawer.draw([pair(0, "B"), pair(1, "A")], "plain", 1, seed=0)
    for row in draws:
        select(row, config)
    wrong, right = draws[0][0], draws[1][0]
    assert wrong.kept and wrong.reward == 0 and wrong.own_target and right.kept and not right.own_target
    apply_confidence_targets(draws, drawer, target="plain_readout", samples=4, prior=1.0, options=task.options, seed=0)
    assert wrong.completion == wrong.own_completion and wrong.completion.endswith("Verdict: A\nConfidence: 60%")
    assert wrong.target_confidence is None
    assert right.target_confidence == pytest.approx(0.6) and right.completion.endswith("Verdict: A\nConfidence: 60%")
