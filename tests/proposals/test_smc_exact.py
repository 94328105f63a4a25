"""power_smc is exact on enumerable table LMs: the weighted particle law and the returned traces converge to
p^alpha (EOS before the horizon included), the normalising-constant estimate is unbiased, and the stylized
decision model's exact p^alpha decision law is recovered. Seeded; each check takes about a second."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fem.configs import ProposalConfig
from fem.proposals import build_proposal
from fem.testing.table_lm import StylizedDecisionLM, empirical, total_variation

ALPHA = 4.0
HORIZON = 4
# settings that exercise each branch: block checks, per-token checks with multinomial resampling, the alpha ramp
# (outlasting the horizon, with the adaptive proposal temperature 1/a_t and per-token checks; or shorter, with a
# fixed temperature), a proposal that is not tempered (tau = 1), resampling at every token (ESS threshold 1), and
# resampling only once the ESS halves
SETTINGS = {
    "block_systematic": {},
    "block_ess_half": {"smc_ess_threshold": 0.5},
    "token_multinomial": {"smc_resample_every": "token", "smc_resampling": "multinomial"},
    "alpha_ramp_token": {"smc_alpha_ramp": 6, "smc_ess_threshold": 1.0, "smc_resample_every": "token"},
    "alpha_ramp_tau_fixed": {"smc_alpha_ramp": 3, "smc_ess_threshold": 0.9, "power_proposal_temperature": 0.25},
    "proposal_tau_1": {"power_proposal_temperature": 1.0},
    "resample_every_token": {"smc_ess_threshold": 1.0, "power_block_size": 1},
}


def smc_config(particles: int, **overrides) -> ProposalConfig:
    settings = {"power_block_size": 2, **overrides}
    return ProposalConfig(
        proposal="power_smc",
        power_alpha=ALPHA,
        max_new_tokens=HORIZON,
        smc_particles=particles,
        generation_batch_size=10**6,
        **settings,
    )


def weighted_law(lm, cfg: ProposalConfig, runs: int, seed: int = 0) -> tuple[dict, float, int]:
    """The particle law ``sum_i W_i delta(y_i)`` averaged over ``runs`` independent systems, the mean of
    ``Z_hat / Z`` and the number of resampling events."""
    systems = build_proposal(cfg, lm).run([lm.prompt] * runs, seed=seed)
    law: dict = {}
    for system in systems:
        for particle, w in zip(system.particles, system.weights):
            key = tuple(particle.tokens)
            law[key] = law.get(key, 0.0) + float(w) / runs
    z = sum(math.exp(ALPHA * v) for v in lm.enumerate_responses(lm.prompt, HORIZON).values())
    z_ratio = float(np.mean([math.exp(s.log_z) / z for s in systems]))
    return law, z_ratio, sum(len(s.resample_at) for s in systems)


def test_the_table_lm_finishes_early_and_power_differs_from_low_temperature(table_lm):
    """What the checks below rely on: EOS before the horizon carries mass, and the targets they separate differ."""
    target = table_lm.power_distribution(table_lm.prompt, HORIZON, ALPHA)
    assert sum(p for y, p in target.items() if len(y) < HORIZON) > 0.2
    base = {y: math.exp(v) for y, v in table_lm.enumerate_responses(table_lm.prompt, HORIZON).items()}
    low_temp, _, _ = weighted_law(table_lm, smc_config(1), 4000)  # one particle: the tempered proposal's own law
    assert total_variation(base, target) > 0.3 and total_variation(low_temp, target) > 0.5


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_weighted_particle_law_and_z_hat_match_power_target(table_lm, setting):
    law, z_ratio, resamples = weighted_law(table_lm, smc_config(64, **SETTINGS[setting]), 400)
    target = table_lm.power_distribution(table_lm.prompt, HORIZON, ALPHA)
    assert total_variation(law, target) < 0.03  # noise ~0.01 at 400 x 64 particles; biased weights give >= 0.09
    assert abs(z_ratio - 1.0) < 0.05  # SMC's Z_hat is unbiased (standard error ~0.01 here)
    if setting != "block_ess_half":
        assert resamples > 100  # the resampling path really ran


def test_particle_law_error_shrinks_as_particles_grow(table_lm):
    target = table_lm.power_distribution(table_lm.prompt, HORIZON, ALPHA)
    tv = {n: total_variation(weighted_law(table_lm, smc_config(n), 16000 // n)[0], target) for n in (2, 8, 64)}
    assert tv[2] > tv[8] + 0.05 and tv[8] > tv[64] + 0.02 and tv[64] < 0.03, tv


def test_returned_traces_follow_power_target(table_lm):
    """8000 traces (8 per prompt from 1000 systems of 32 particles): TV to p^alpha far below p's or tempering's."""
    cfg = smc_config(32, smc_resample_every="token")
    groups = build_proposal(cfg, table_lm).propose([table_lm.prompt] * 1000, 8, seed=3)
    assert all(len(g) == 8 for g in groups)
    traces = [t for g in groups for t in g]
    target = table_lm.power_distribution(table_lm.prompt, HORIZON, ALPHA)
    assert total_variation(empirical([tuple(t.token_ids) for t in traces]), target) < 0.05
    for t in traces[:50]:
        assert t.finished == (t.token_ids[-1] == table_lm.eos_id)
        assert t.logp == pytest.approx(table_lm.score([table_lm.prompt], [t.token_ids])[0])


def test_stylized_decision_law_under_power_is_recovered():
    """The stylized model (k=2 decisions, T=12): p^alpha's exact decision-tuple law and accuracy. A decision's
    weight builds up over the filler after it, so the self-normalised bias is larger here (TV about 0.13 at 8
    particles, 0.04 at 32); 128 particles bring it to about 0.01."""
    lm = StylizedDecisionLM(m=3, k=2, T=12)
    cfg = ProposalConfig(
        proposal="power_smc",
        power_alpha=ALPHA,
        max_new_tokens=lm.T,
        power_block_size=3,
        smc_particles=128,
        generation_batch_size=10**6,
    )
    systems = build_proposal(cfg, lm).run([lm.prompt] * 80, seed=0)
    law: dict = {}
    for system in systems:
        for particle, w in zip(system.particles, system.weights):
            key = lm.decisions(particle.tokens)
            law[key] = law.get(key, 0.0) + float(w) / len(systems)
    exact = lm.decision_distribution(ALPHA)
    assert total_variation(law, exact) < 0.03
    assert law[(0, 0)] == pytest.approx(lm.accuracy(ALPHA), abs=0.03)
    assert lm.accuracy(ALPHA) > lm.accuracy(1.0) + 0.3
