"""The stylized decision model (method.md §5): exact laws, and entropy cuts mix faster than uniform cuts."""

from __future__ import annotations

import math

import pytest

from fem.configs import ProposalConfig
from fem.proposals import build_proposal
from fem.testing.table_lm import StylizedDecisionLM, empirical, total_variation


def test_decision_law_is_exact_under_p_and_power():
    lm = StylizedDecisionLM(m=2, k=2, T=6)
    for alpha in (1.0, 4.0):
        full = lm.power_distribution(lm.prompt, lm.T, alpha)
        marginal: dict = {}
        for resp, prob in full.items():
            key = lm.decisions(resp)
            marginal[key] = marginal.get(key, 0.0) + prob
        assert total_variation(marginal, lm.decision_distribution(alpha)) < 1e-12
    big = StylizedDecisionLM(m=3, k=3, T=24)
    assert big.accuracy(1.0) == pytest.approx(3**-3)
    assert big.accuracy(4.0) > 0.6
    assert big.decisions(big.start(1)) == (1, 1, 1)
    h = [big.entropy(big.prompt + big.start(0)[:t]) for t in range(big.T)]
    assert all(h[p] == pytest.approx(math.log(3)) for p in big.positions)
    assert max(v for t, v in enumerate(h) if t not in big.positions) < 0.35


def _tv_after(lm, cut, steps, chains=300, seed=0):
    cfg = ProposalConfig(
        proposal="power_mh",
        max_new_tokens=lm.T,
        power_block_size=lm.T,
        power_cut=cut,
        power_alpha=4.0,
        generation_batch_size=chains,
    )
    prop = build_proposal(cfg, lm)
    starts = prop.start_chains([lm.prompt] * chains, [lm.start(1)] * chains)
    target = lm.decision_distribution(4.0)
    history = {}

    def record(step, cs):
        history[step] = total_variation(empirical([lm.decisions(c.tokens) for c in cs]), target)

    prop.run_mh(starts, lm.T, steps, seed=seed, on_step=record)
    return history


def test_entropy_cut_mixes_faster_than_uniform_from_all_wrong_start():
    lm = StylizedDecisionLM(m=3, k=3, T=24)
    uniform = _tv_after(lm, "uniform", 20)
    entropy = _tv_after(lm, "entropy", 20)
    assert uniform[1] > 0.9 and entropy[1] > 0.5  # both start far from p^alpha
    for step in (5, 10, 20):
        assert entropy[step] < uniform[step] - 0.1
    assert entropy[20] < 0.25
