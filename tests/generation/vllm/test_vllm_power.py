"""power_mh on vLLM: its chains have the law of the chains on the ``hf`` reference backend (a two-sample test on the
traces' length law, which a biased kernel fails), exact early rejection changes no decision, and proposals re-encode
only what vLLM's prefix cache does not hold.

The session's tiny model draws its EOS often, so traces end at several lengths and the kernels' treatment of unequal
suffix lengths (where the published kernels are biased: proposals capped at the current length, the current suffix
truncated to the proposal's) shows in the law of the chains.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fem.configs import ProposalConfig
from fem.proposals.power import PowerMHProposal

pytestmark = pytest.mark.vllm

T, STEPS, CHAINS = 8, 4, 400  # horizon (one stage), MH steps, chains per run
LEVEL = 1e-3  # the laws differ when the homogeneity test's p-value falls below this


def homogeneity_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square test that two samples of a discrete statistic come from one law (empty bins dropped)."""
    table = np.stack([np.bincount(a, minlength=T + 1), np.bincount(b, minlength=T + 1)]).astype(float)
    table = table[:, table.sum(0) > 0]
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    df = table.shape[1] - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), torch.tensor(stat / 2.0)))


@pytest.fixture(scope="module")
def power_setup(vllm_backend, hf_ref):
    """(prompt, hf backend, vLLM backend): the session's backends, whose tiny model draws its EOS often enough that
    traces end at several lengths."""
    return hf_ref.encode("Question: what is 2 + 3?"), hf_ref, vllm_backend


def run_chains(
    backend, prompt, *, cut="entropy", steps=STEPS, compat=False, early_rejection=True, seed=0, chains=CHAINS
):
    config = ProposalConfig(
        proposal="power_mh",
        max_new_tokens=T,
        power_block_size=T,
        power_mh_steps=steps,
        power_cut=cut,
        power_reference_compat=compat,
        power_early_rejection=early_rejection,
        power_early_stop=False,
        generation_batch_size=chains,
    )
    return PowerMHProposal(config, backend).propose([prompt], chains, seed=seed)[0]


def lengths(traces) -> np.ndarray:
    return np.array([len(t.token_ids) for t in traces])


@pytest.mark.parametrize(
    "cut, steps", [("entropy", STEPS), pytest.param("uniform", 2 * STEPS, marks=pytest.mark.slow)]
)
def test_chains_on_vllm_have_the_hf_law_and_a_biased_kernel_does_not(power_setup, cut, steps):
    prompt, hf, vllm = power_setup
    reference = lengths(run_chains(hf, prompt, cut=cut, steps=steps, seed=1))
    assert len(set(reference.tolist())) >= 3  # traces end at several lengths: the statistic can tell kernels apart
    p_exact = homogeneity_p_value(reference, lengths(run_chains(vllm, prompt, cut=cut, steps=steps, seed=2)))
    biased = run_chains(vllm, prompt, cut=cut, steps=steps, compat=True, seed=2)
    p_biased = homogeneity_p_value(reference, lengths(biased))
    assert p_exact > LEVEL, p_exact
    assert p_biased < LEVEL, p_biased


def test_early_rejection_on_vllm_changes_no_decision(power_setup):
    """Per-row seeds make a row's proposal independent of when other rows stop: with and without early rejection the
    chains end in the same traces, and early rejection decodes fewer tokens."""
    prompt, _, vllm = power_setup
    on = run_chains(vllm, prompt, seed=3, chains=64)
    off = run_chains(vllm, prompt, seed=3, chains=64, early_rejection=False)
    assert [t.token_ids for t in on] == [t.token_ids for t in off]
    assert [t.info["stage_accepts"] for t in on] == [t.info["stage_accepts"] for t in off]
    assert sum(t.info["early_rejections"] for t in on) > 0 == sum(t.info["early_rejections"] for t in off)
    assert sum(t.cost.tokens_decoded for t in on) < sum(t.cost.tokens_decoded for t in off)


def test_proposals_reencode_only_what_the_prefix_cache_lacks(vllm_backend, hf_ref):
    """A long prompt's full KV blocks come from vLLM's prefix cache at every MH step: a proposal re-encodes less than
    one block plus the kept part, and the chain's cost counts what vLLM reports, not the whole prefix."""
    block = vllm_backend.engine.vllm_config.cache_config.block_size
    prompt = hf_ref.encode("Instruction: which response is better? " * 40)[: 2 * block + 5]
    config = ProposalConfig(proposal="power_mh", max_new_tokens=8, power_block_size=4, power_mh_steps=2)
    traces = PowerMHProposal(config, vllm_backend).propose([prompt], 3, seed=0)[0]
    for trace in traces:
        proposals = trace.cost.mh_steps + 1  # one extension of the second stage, plus the MH steps
        assert trace.cost.mh_steps == 4
        assert 0 < trace.cost.tokens_reencoded <= proposals * (block + config.max_new_tokens)
        assert trace.cost.tokens_reencoded < proposals * len(prompt)
