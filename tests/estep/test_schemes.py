"""E-step schemes and filters with a scripted drawer: what is drawn from which prompt, and what is kept."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from fem.configs import EStepConfig
from fem.drawing import HINTED, PLAIN, Sample
from fem.errors import ConfigError
from fem.estep.filters import leaks_hint
from fem.estep.runner import estep_metrics, kept_samples, run_estep
from fem.estep.schemes import PPSScheme, RejectionScheme, StarScheme
from fem.proposals.base import Cost, Trace
from fem.tasks.base import Example, Prediction
from fem.utils.distributed import World


@dataclass
class ScriptedDrawer:
    """Draw ``a`` of example ``e`` from ``origin`` is correct iff ``correct(e, origin, a)``; texts are distinct
    unless ``duplicate`` says otherwise. Records every call."""

    correct: callable
    text: callable = lambda e, origin, a: f"rationale {a} ({origin[0]}) for {e.id}"
    calls: list = field(default_factory=list)

    def draw(self, examples, origin, n, *, seed):
        self.calls.append((origin, [e.id for e in examples], n, seed))
        rng = random.Random(seed)
        out = []
        for e in examples:
            samples = []
            for a in range(n):
                ok = self.correct(e, origin, a)
                trace = Trace(
                    token_ids=[1, 2], text=self.text(e, origin, a), logp=[-1.0, -1.0], cost=Cost(tokens_decoded=2)
                )
                pred = Prediction(
                    example_id=e.id, completion=trace.text, extracted="x" if ok else None, reward=1.0 if ok else 0.0
                )
                samples.append(
                    Sample(
                        example=e,
                        origin=origin,
                        attempt=a,
                        trace=trace,
                        prediction=pred,
                        completion=trace.text + f" [{rng.random():.6f}]",
                    )
                )
            out.append(samples)
        return out


EXAMPLES = [Example(id=f"ex{i}", answer=str(i)) for i in range(6)]


def test_rejection_keeps_first_correct_then_up_to_k():
    drawer = ScriptedDrawer(correct=lambda e, o, a: a >= 1)
    draws = RejectionScheme(EStepConfig(scheme="rejection", estep_samples=4, estep_max_keep=1)).run(
        EXAMPLES, drawer, seed=0
    )
    assert all([s.kept for s in d] == [False, True, False, False] for d in draws)
    assert all(d[0].reason == "reward" and d[2].reason == "cap" for d in draws)
    draws = RejectionScheme(EStepConfig(scheme="rejection", estep_samples=4, estep_max_keep=2)).run(
        EXAMPLES, drawer, seed=0
    )
    assert all([s.kept for s in d] == [False, True, True, False] for d in draws)
    assert {o for o, *_ in drawer.calls} == {PLAIN}


def test_star_rationalizes_only_failing_examples_from_the_hinted_prompt():
    # plain draws succeed for even examples only; hinted draws always succeed
    drawer = ScriptedDrawer(correct=lambda e, o, a: o == HINTED or int(e.id[2:]) % 2 == 0)
    draws = StarScheme(EStepConfig(scheme="star", estep_samples=2, estep_max_keep=1)).run(EXAMPLES, drawer, seed=0)
    assert [c[0] for c in drawer.calls] == [PLAIN, HINTED]
    assert drawer.calls[1][1] == ["ex1", "ex3", "ex5"]
    for i, d in enumerate(draws):
        kept = [s for s in d if s.kept]
        assert len(kept) == 1
        assert kept[0].origin == (PLAIN if i % 2 == 0 else HINTED)
        assert [s.attempt for s in d] == list(range(len(d)))


def test_pps_draws_only_from_the_hinted_prompt_and_filters_leakage():
    drawer = ScriptedDrawer(
        correct=lambda e, o, a: True,
        text=lambda e, o, a: "We are told the answer is 3, so it is 3." if a == 0 else f"Reasoning {a} for {e.id}",
    )
    draws = PPSScheme(EStepConfig(scheme="pps", estep_samples=3, estep_max_keep=1, leakage_filter=True)).run(
        EXAMPLES, drawer, seed=0
    )
    assert {c[0] for c in drawer.calls} == {HINTED}
    assert all(d[0].reason == "leakage" and d[1].kept for d in draws)


def test_dedupe_and_reward_weighting():
    drawer = ScriptedDrawer(correct=lambda e, o, a: True, text=lambda e, o, a: "Same  text" if a < 2 else "other")
    draws = RejectionScheme(EStepConfig(scheme="rejection", estep_samples=3, estep_max_keep=3, dedupe=True)).run(
        EXAMPLES[:1], drawer, seed=0
    )
    assert [s.kept for s in draws[0]] == [True, False, True] and draws[0][1].reason == "duplicate"


def test_unfiltered_keeps_reward_zero_draws_with_their_own_answer_and_the_default_does_not():
    """reward_filter: false (unfiltered power distillation) keeps every draw, a reward-0 one with its own answer as
    the M-step target; the default filter still drops it."""
    drawer = ScriptedDrawer(correct=lambda e, o, a: a == 1)

    def draws(config):
        out = RejectionScheme(config).run(EXAMPLES[:2], _with_own(drawer), seed=0)
        return [s for d in out for s in d]

    unfiltered = draws(EStepConfig(scheme="rejection", estep_samples=3, estep_max_keep=3, reward_filter=False))
    assert all(s.kept and s.weight == 1.0 for s in unfiltered)
    assert {s.reward for s in unfiltered} == {0.0, 1.0}
    for s in unfiltered:  # a correct draw keeps the gold-answer target; a wrong one trains its own answer
        assert (s.completion == s.own_completion) is (s.reward == 0)
    default = draws(EStepConfig(scheme="rejection", estep_samples=3, estep_max_keep=3))
    assert [s.kept for s in default] == [s.reward == 1.0 for s in default] and any(not s.kept for s in default)
    assert all(s.reason == "reward" for s in default if not s.kept)
    capped = draws(EStepConfig(scheme="rejection", estep_samples=3, estep_max_keep=1, reward_filter=False))
    assert [s.kept for s in capped] == [True, False, False] * 2 and capped[1].reason == "cap"
    with pytest.raises(ConfigError, match="reward_weighting"):
        EStepConfig(reward_filter=False, reward_weighting=True)


def _with_own(drawer):
    """The scripted drawer with each draw's own-answer completion filled in (as ProposalDrawer does)."""

    class Own:
        def draw(self, examples, origin, n, *, seed):
            out = drawer.draw(examples, origin, n, seed=seed)
            for samples in out:
                for s in samples:
                    s.own_completion = s.trace.text + " [own answer]"
            return out

    return Own()


@pytest.mark.parametrize(
    "text, leaks",
    [
        ("Since we are told the answer is B, B is right.", True),
        ("The hint says 42.", True),
        ("Given the correct answer, the sum is 5.", True),
        ("First add 2 and 3 to get 5.", False),
        ("Response A gives more detail than response B.", False),
    ],
)
def test_leakage_filter(text, leaks):
    assert leaks_hint(text) is leaks


def test_runner_persists_chunks_and_resumes_without_loss_or_duplicates(tmp_path):
    drawer = ScriptedDrawer(correct=lambda e, o, a: (a + int(e.id[2:])) % 3 == 0)
    scheme = RejectionScheme(EStepConfig(scheme="rejection", estep_samples=3, estep_max_keep=2))
    kwargs = dict(
        round_index=0,
        examples=EXAMPLES,
        scheme=scheme,
        drawer=drawer,
        proposal_name="scripted",
        chunk_size=2,
        seed=7,
        world=World(),
        save_rejected=False,
    )
    full = run_estep(round_dir=tmp_path / "full", **kwargs)
    reference = kept_samples(tmp_path / "full")
    assert full["estep/acceptance_rate"] == 1.0 and full["estep/samples_per_example"] == 3

    # simulate a crash: only chunk 0 finished, chunk 1 wrote samples but no progress line, and a torn last line
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    lines = (tmp_path / "full" / "samples.jsonl").read_text().splitlines(keepends=True)
    chunk_of = [int(__import__("json").loads(line)["chunk"]) for line in lines]
    (crashed / "samples.jsonl").write_text("".join(line for line, c in zip(lines, chunk_of) if c <= 1) + '{"torn": ')
    progress = (tmp_path / "full" / "estep_progress.jsonl").read_text().splitlines(keepends=True)
    (crashed / "estep_progress.jsonl").write_text(progress[0])
    drawer.calls.clear()
    resumed = run_estep(round_dir=crashed, **kwargs)
    assert [c[1] for c in drawer.calls] == [["ex2", "ex3"], ["ex4", "ex5"]]  # chunk 0 not redone
    assert kept_samples(crashed) == reference
    assert resumed["estep/kept_samples"] == full["estep/kept_samples"]
    assert estep_metrics(crashed, 1, num_examples=6)["estep/acceptance_rate"] == 1.0


def test_drawer_refuses_a_proposal_that_drops_rows():
    from fem.drawing import ProposalDrawer, ProposalError

    class Short:
        name = "short"

        def propose(self, prompts, num_samples=1, *, seed=0):
            return [[Trace(token_ids=[1], text="x", logp=[-1.0])] * num_samples for _ in prompts[:-1]]

    drawer = ProposalDrawer(task=None, proposal=Short(), render=lambda e, o: [1], score=None, train_completion=None)
    with pytest.raises(ProposalError, match="returned 1 trace lists for 2 prompts"):
        drawer.draw(EXAMPLES[:2], PLAIN, 2, seed=0)


@dataclass
class GradedDrawer:
    """Attempt ``a`` of every example scores ``REWARDS[a]`` (a graded reward, as partial test passes give)."""

    def draw(self, examples, origin, n, *, seed):
        out = []
        for e in examples:
            row = []
            for a in range(n):
                trace = Trace(token_ids=[1], text=f"rationale {a} for {e.id}", logp=[-1.0])
                pred = Prediction(example_id=e.id, completion=trace.text, extracted="x", reward=GRADED[a])
                row.append(
                    Sample(example=e, origin=origin, attempt=a, trace=trace, prediction=pred, completion=trace.text)
                )
            out.append(row)
        return out


GRADED = [0.0, 0.3, 0.6, 1.0]


@pytest.mark.parametrize(
    "threshold, kept",
    [(1.0, [False, False, False, True]), (0.5, [False, False, True, True]), (0.3, [False, True, True, True]),
     (0.0, [False, True, True, True])],
)  # fmt: skip
def test_the_reward_threshold_keeps_exactly_the_draws_at_or_above_it_and_never_a_zero_reward(threshold, kept):
    """Issue 17, item 13: a filter that ignored the threshold, or kept reward-0 draws at threshold 0, passed."""
    config = EStepConfig(scheme="rejection", estep_samples=4, estep_max_keep=4, reward_threshold=threshold)
    draws = RejectionScheme(config).run(EXAMPLES[:2], GradedDrawer(), seed=0)
    for d in draws:
        assert [s.kept for s in d] == kept
        assert all(s.reason == "reward" for s in d if not s.kept)


def test_kept_samples_never_returns_a_rejected_row_when_rejected_rows_are_saved(tmp_path):
    """With ``save_rejected`` the samples file also holds rejected draws; the M-step reads ``kept_samples``, which
    must return the kept ones only (issue 17, item 13)."""
    scheme = RejectionScheme(EStepConfig(scheme="rejection", estep_samples=4, estep_max_keep=4, reward_threshold=0.5))
    run_estep(
        round_index=0, examples=EXAMPLES, scheme=scheme, drawer=GradedDrawer(), proposal_name="graded",
        round_dir=tmp_path, chunk_size=4, seed=0, world=World(), save_rejected=True,
    )  # fmt: skip
    rows = [__import__("json").loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * len(EXAMPLES) and sum(not r["kept"] for r in rows) == 2 * len(EXAMPLES)
    kept = kept_samples(tmp_path)
    assert len(kept) == 2 * len(EXAMPLES) and all(r["kept"] and r["reward"] >= 0.5 for r in kept)
