"""power_smc on vLLM: the traces it returns have the law of power_smc's traces on the ``hf`` reference backend (a
two-sample test on the law of the traces' base log-likelihood, in sextiles of the reference), and the test has
power: the same run on vLLM with a biased incremental
weight (the proposal's ``log q`` left out) fails it. vLLM is not a ``SupportsCachedGeneration`` backend: each block
re-sends the particle's prefix, which its prefix cache holds."""

from __future__ import annotations

import numpy as np
import pytest
from test_vllm_power import homogeneity_p_value, lengths

from fem.configs import ProposalConfig
from fem.generation.base import SupportsCachedGeneration
from fem.proposals.smc import PowerSMCProposal

pytestmark = pytest.mark.vllm

T, BLOCK, PARTICLES, RUNS = 8, 4, 8, 300  # horizon, block (one resampling check mid-way), particles, SMC runs
LEVEL = 1e-3


def smc_traces(backend, prompt, seed):
    config = ProposalConfig(
        proposal="power_smc",
        power_alpha=4.0,
        max_new_tokens=T,
        power_block_size=BLOCK,
        smc_particles=PARTICLES,
        generation_batch_size=RUNS * PARTICLES,
    )
    runs = PowerSMCProposal(config, backend).propose([prompt] * RUNS, 1, seed=seed)  # one draw per run
    return [traces[0] for traces in runs]


def sextile_edges(values) -> list[float]:
    """Bin edges near the sextiles, each halfway between two distinct values: a trace drawn by both backends (the
    same tokens, log-likelihoods equal within 1e-3) falls in the same bin on both."""
    distinct = np.unique(np.round(values, 2))
    edges = []
    for q in np.quantile(values, [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6]):
        i = min(int(np.searchsorted(distinct, q)), len(distinct) - 2)
        edges.append(float(distinct[i] + distinct[i + 1]) / 2)
    return sorted(set(edges))


def loglik_bins(traces, edges) -> np.ndarray:
    """Each trace's base log-likelihood ``sum(logp)``, as the index of its bin between ``edges``."""
    return np.digitize([sum(t.logp) for t in traces], edges)


def test_power_smc_on_vllm_has_the_hf_law_and_a_biased_weight_does_not(vllm_backend, hf_ref, monkeypatch):
    assert not isinstance(vllm_backend, SupportsCachedGeneration)
    prompt = hf_ref.encode("Question: what is 2 + 3?")
    hf_traces = smc_traces(hf_ref, prompt, seed=1)
    edges = sextile_edges([sum(t.logp) for t in hf_traces])
    reference = loglik_bins(hf_traces, edges)
    assert len(set(lengths(hf_traces).tolist())) >= 2 and len(set(reference.tolist())) >= 4
    p_exact = homogeneity_p_value(reference, loglik_bins(smc_traces(vllm_backend, prompt, seed=2), edges))

    def without_logq(self, particle, cont, t0):  # the incremental weight of a proposal taken for the target
        weights, sums, lw, s = [], [], particle.logw, particle.sum_logp
        for t, lp in enumerate(cont.logp, start=t0 + 1):
            lw += self.alpha_at(t) * (s + lp) - self.alpha_at(t - 1) * s
            s += lp
            weights.append(lw)
            sums.append(s)
        return weights, sums

    monkeypatch.setattr(PowerSMCProposal, "trajectory", without_logq)
    p_biased = homogeneity_p_value(reference, loglik_bins(smc_traces(vllm_backend, prompt, seed=2), edges))
    assert p_exact > LEVEL, p_exact
    assert p_biased < LEVEL, p_biased
