"""power_mh is exact: the one-step kernel leaves p^alpha invariant, sampled outputs match p^alpha, early rejection
changes no decision; the reference-compatible kernel does not leave p^alpha invariant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fem.configs import ProposalConfig
from fem.proposals import build_proposal
from fem.proposals.cuts import CutLaw, jump_weights
from fem.proposals.power import MHRatio, token_term
from fem.testing.table_lm import empirical, exact_mh_kernel, hashed_table_lm, total_variation

ALPHA = 4.0


def _stationarity_tv(lm, horizon, law, compat=False):
    states, K = exact_mh_kernel(lm, horizon, ALPHA, law, compat=compat)
    target = lm.power_distribution(lm.prompt, horizon, ALPHA)
    pi = np.array([target.get(s, 0.0) for s in states])
    assert np.allclose(K.sum(1), 1.0, atol=1e-12)
    return 0.5 * float(np.abs(pi @ K - pi).sum())


@pytest.mark.parametrize(
    "law", [CutLaw("uniform"), CutLaw("entropy", 4.0, 0.1), CutLaw("entropy", 4.0, 0.0), CutLaw("entropy", 2.0, 0.5)]
)
def test_exact_kernel_leaves_power_target_invariant(table_lm, law):
    assert _stationarity_tv(table_lm, 4, law) < 1e-12


@pytest.mark.parametrize("kind", ["uniform", "entropy"])
def test_reference_compat_kernel_is_not_invariant(table_lm, kind):
    assert _stationarity_tv(table_lm, 4, CutLaw(kind, 4.0, 0.1), compat=True) > 0.05


def test_omitting_the_hastings_term_breaks_invariance(table_lm, monkeypatch):
    law = CutLaw("entropy", 4.0, 0.1)
    monkeypatch.setattr(MHRatio, "partial", lambda self: self.base + self.log_cx + self.sum_terms)  # drop cut terms
    assert _stationarity_tv(table_lm, 4, law) > 1e-4


@pytest.mark.parametrize("cut", ["uniform", "entropy"])
def test_sampled_outputs_match_power_distribution(table_lm, cut):
    horizon = 4
    cfg = ProposalConfig(
        proposal="power_mh",
        max_new_tokens=horizon,
        power_block_size=2,
        power_mh_steps=20,
        power_cut=cut,
        power_early_stop=False,
        generation_batch_size=4000,
    )
    traces = build_proposal(cfg, table_lm).propose([table_lm.prompt], 4000, seed=1)[0]
    emp = empirical([tuple(t.token_ids) for t in traces])
    target = table_lm.power_distribution(table_lm.prompt, horizon, ALPHA)
    assert total_variation(emp, target) < 0.02
    base = {k: math.exp(v) for k, v in table_lm.enumerate_responses(table_lm.prompt, horizon).items()}
    assert total_variation(base, target) > 0.2  # the test can tell p from p^alpha


@pytest.mark.parametrize("cut", ["uniform", "entropy"])
def test_early_rejection_changes_no_decision(cut):
    lm = hashed_table_lm(3, seed=2)
    runs = {}
    for er in (True, False):
        cfg = ProposalConfig(
            proposal="power_mh",
            max_new_tokens=6,
            power_block_size=2,
            power_mh_steps=6,
            power_cut=cut,
            power_early_rejection=er,
            power_early_stop=False,
            generation_batch_size=64,
        )
        prop = build_proposal(cfg, lm)
        runs[er] = prop.propose([lm.prompt], 200, seed=7)[0]
    on, off = runs[True], runs[False]
    assert [t.token_ids for t in on] == [t.token_ids for t in off]
    assert [t.info["stage_accepts"] for t in on] == [t.info["stage_accepts"] for t in off]
    assert sum(t.info["early_rejections"] for t in on) > 0 and sum(t.info["early_rejections"] for t in off) == 0
    assert sum(t.cost.tokens_decoded for t in on) < sum(t.cost.tokens_decoded for t in off)


def test_early_rejection_off_when_proposal_is_not_tempered(table_lm):
    cfg = ProposalConfig(proposal="power_mh", max_new_tokens=4, power_proposal_temperature=0.5)
    prop = build_proposal(cfg, table_lm)
    assert not prop.early_rejection and not prop.tempered
    cfg = ProposalConfig(proposal="power_mh", max_new_tokens=4, power_reference_compat=True)
    assert not build_proposal(cfg, table_lm).early_rejection


def test_uniform_hastings_term_is_the_length_ratio():
    law = CutLaw("uniform")
    x_terms, x_ent = [-0.1, -0.2, -0.3, -0.4], [1.0, 0.5, 0.2, 0.1]
    ratio = MHRatio(law, x_terms, x_ent, 1, compat=False)
    for term, h in [(-0.05, 0.9), (-0.07, 0.3)]:  # proposal of length 3 from cut 1
        ratio.push(term, h)
    expected = (-0.05 - 0.07) - (-0.2 - 0.3 - 0.4) + math.log(4) - math.log(3)
    assert ratio.value() == pytest.approx(expected, abs=1e-12)
    compat = MHRatio(law, x_terms, x_ent, 1, compat=True)
    compat.push(-0.05, 0.9)
    compat.push(-0.07, 0.3)
    assert compat.value() == pytest.approx((-0.05 - 0.07) - (-0.2 - 0.3), abs=1e-12)  # truncated, no length term


def test_entropy_hastings_term_uses_proposed_trace_and_stored_prefix():
    law = CutLaw("entropy", 4.0, 0.1)
    x_ent = [0.2, 1.5, 0.3, 0.9]
    x_terms = [-0.1] * 4
    j = 1
    ratio = MHRatio(law, x_terms, x_ent, j, compat=False)
    ratio.push(-0.2, 7.0)  # position j: the stored H_1 = 1.5 is used, not the proposal's value
    ratio.push(-0.3, 2.5)
    y_ent = [0.2, 1.5, 2.5]
    expected = (-0.5) - (-0.3) + law.log_prob(j, y_ent) - law.log_prob(j, x_ent)
    assert ratio.value() == pytest.approx(expected, abs=1e-12)


def test_epsilon_mixture_fallback_and_position_zero():
    law = CutLaw("entropy", 4.0, 0.25)
    h = [0.5, 1.5, 1.0, 2.0]
    w = np.array(jump_weights(h, 4.0))
    assert w.tolist() == pytest.approx([0.5**4, 1.0, 0.0, 1.0])  # H_{-1} = 0 gives position 0 weight H_0^beta
    p = law.probs(h)
    assert p == pytest.approx(0.75 * w / w.sum() + 0.25 / 4)
    assert p.sum() == pytest.approx(1.0) and p[0] > 0 and p[2] == pytest.approx(0.25 / 4)
    assert CutLaw("entropy", 4.0, 0.0).probs([0.0, 0.0, 0.0]) == pytest.approx([1 / 3] * 3)  # all jumps 0: uniform
    assert CutLaw("entropy", 4.0, 0.0).probs([0.3, 0.3]) == pytest.approx([1.0, 0.0])  # eps=0: only jumps
    assert CutLaw("uniform").probs(h) == pytest.approx([0.25] * 4)
    rng = np.random.default_rng(0)
    draws = [CutLaw("entropy", 4.0, 0.0).sample([0.3, 0.3, 0.1], rng)[0] for _ in range(200)]
    assert set(draws) == {0}
    freq = np.bincount([law.sample(h, rng)[0] for _ in range(20000)], minlength=4) / 20000
    assert np.abs(freq - p).max() < 0.015


def test_running_cut_matches_full_law_and_never_increases():
    law = CutLaw("entropy", 4.0, 0.1)
    rng = np.random.default_rng(3)
    for _ in range(50):
        h = rng.uniform(0, 2, size=12).tolist()
        j = int(rng.integers(0, 12))
        run = law.running(h, j)
        values = [run.log_prob()]
        for t in range(j + 1, 12):
            run.add(h[t])
            values.append(run.log_prob())
        assert values[-1] == pytest.approx(law.log_prob(j, h), abs=1e-12)
        assert all(b <= a for a, b in zip(values, values[1:]))


def test_token_term_is_token_independent_when_tempered(table_lm):
    from fem.generation.base import SamplingParams

    ctx = tuple(table_lm.prompt) + (0,)
    _, lp, lq, _, _ = table_lm._row(ctx, SamplingParams(temperature=1 / ALPHA))
    terms = [token_term(a, b, ALPHA, False) for a, b in zip(lp, lq) if b > -math.inf]
    p = table_lm.probs(ctx)
    assert terms == pytest.approx([math.log((p[p > 0] ** ALPHA).sum())] * len(terms), abs=1e-9)
    assert max(terms) <= 0
