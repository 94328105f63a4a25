"""power_smc mechanics: config errors, resampling schemes, weights that telescope to p^alpha, cost bookkeeping, and
on the hf backend: row caches (ancestors' caches shared on resampling) give what re-encoding gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fem.configs import ProposalConfig
from fem.errors import ConfigError
from fem.proposals import build_proposal
from fem.proposals.particles import bounded_cache
from fem.proposals.smc import PowerSMCProposal, ess, resample_indices
from fem.testing.table_lm import total_variation

ALPHA = 4.0


def smc(**overrides) -> ProposalConfig:
    settings = dict(proposal="power_smc", max_new_tokens=4, power_block_size=2, smc_particles=8)
    return ProposalConfig(**{**settings, **overrides})


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"smc_particles": 0}, "smc_particles"),
        ({"smc_ess_threshold": 1.5}, "smc_ess_threshold"),
        ({"smc_ess_threshold": -0.1}, "smc_ess_threshold"),
        ({"smc_resampling": "stratified"}, "smc_resampling"),
        ({"smc_resample_every": "step"}, "smc_resample_every"),
        ({"smc_alpha_ramp": -1}, "smc_alpha_ramp"),
        ({"top_k": 5}, "top_k"),
        ({"top_p": 0.9}, "top_p"),
    ],
)
def test_bad_settings_raise_config_error(overrides, field):
    with pytest.raises(ConfigError) as err:
        smc(**overrides)
    assert err.value.field == field and err.value.fix


def test_registered_and_truncation_only_refused_for_power_smc(table_lm):
    assert isinstance(build_proposal(smc(), table_lm), PowerSMCProposal)
    ProposalConfig(proposal="ancestral", top_k=5, top_p=0.9)  # other proposals keep their truncation


def test_resampling_schemes_are_unbiased():
    rng = np.random.default_rng(0)
    w = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0])
    for _ in range(200):  # systematic: every index appears floor(N w) or ceil(N w) times
        counts = np.bincount(resample_indices(w, 16, rng, "systematic"), minlength=6)
        assert np.all(counts >= np.floor(16 * w)) and np.all(counts <= np.ceil(16 * w))
    freq = np.bincount(resample_indices(w, 40000, rng, "multinomial"), minlength=6) / 40000
    assert np.abs(freq - w).max() < 0.01 and freq[-1] == 0
    w = np.array([0.3, 0.3, 0.4])  # N w = 1.2, 1.2, 1.6: each index's expected count, for both schemes
    for scheme in ("systematic", "multinomial"):
        mean = np.mean([np.bincount(resample_indices(w, 4, rng, scheme), minlength=3) for _ in range(20000)], axis=0)
        assert np.abs(mean - 4 * w).max() < 0.03, (scheme, mean)
    assert ess(np.log(np.full(8, 0.3))) == pytest.approx(8) and ess(np.array([0.0, -np.inf, -np.inf])) == 1


@pytest.mark.parametrize("ramp, tau", [(0, None), (2, None), (6, None), (3, 0.5)])
def test_weights_telescope_to_power_target(table_lm, ramp, tau):
    """Without resampling every final weight is alpha log p(y) - log q(y), whatever the ramp (EOS included);
    with the tempered proposal and no ramp each token adds log sum_v p(v)^alpha of its context."""
    cfg = smc(smc_particles=64, smc_ess_threshold=0.0, smc_alpha_ramp=ramp, power_proposal_temperature=tau)
    (system,) = build_proposal(cfg, table_lm).run([table_lm.prompt], seed=1)
    assert any(p.eos and len(p.tokens) < 4 for p in system.particles) and any(not p.eos for p in system.particles)
    for p in system.particles:
        assert p.logw == pytest.approx(ALPHA * math.fsum(p.logp) - math.fsum(p.logq), abs=1e-9)
        if ramp == 0 and tau is None:
            ctx, tempered = list(table_lm.prompt), 0.0
            for tok in p.tokens:
                tempered += math.log(float((table_lm.probs(ctx) ** ALPHA).sum()))
                ctx.append(tok)
            assert p.logw == pytest.approx(tempered, abs=1e-9)


def test_traces_cost_and_determinism(table_lm):
    cfg = smc(smc_particles=16, smc_resample_every="token", smc_ess_threshold=0.9, generation_batch_size=32)
    prop = build_proposal(cfg, table_lm)
    prompts = [table_lm.prompt] * 5  # 2 systems per chunk of 32 rows, then 2, then 1
    groups = prop.propose(prompts, 3, seed=4)
    assert [len(g) for g in groups] == [3] * 5
    flat = [t for g in groups for t in g]
    assert sum(t.cost.tokens_decoded for t in flat) == prop.last_stats.tokens_decoded
    assert sum(t.info["resamples"] for t in flat) > 0 and sum(t.info["tokens_discarded"] for t in flat) > 0
    for group in groups:
        shared = sum(t.cost.tokens_decoded for t in group)
        assert shared >= 16 * 2 and abs(group[0].cost.tokens_decoded - group[-1].cost.tokens_decoded) <= 1
        for t in group:
            assert t.info["proposal"] == "power_smc" and 0 < t.info["weight"] <= 1 and t.info["particles"] == 16
            assert t.cost.tokens_reencoded > 0  # a backend without row caches re-encodes every prefix
            assert t.logp == pytest.approx(table_lm.score([table_lm.prompt], [t.token_ids])[0])
    again = build_proposal(cfg, table_lm).propose(prompts, 3, seed=4)
    assert [t.token_ids for g in again for t in g] == [t.token_ids for t in flat]
    other = build_proposal(cfg, table_lm).propose(prompts, 3, seed=5)
    assert [t.token_ids for g in other for t in g] != [t.token_ids for t in flat]


def test_returned_traces_are_systematic_draws_in_random_order(table_lm):
    """num_samples traces from one system: each particle returned floor or ceil of num_samples * W times (systematic
    selection), and the order is shuffled, so each returned position on its own is a draw from W: over many
    systems the first trace's particle has the same law as the weighted particles."""
    prop = build_proposal(smc(smc_particles=6, power_block_size=1), table_lm)
    systems = prop.run([table_lm.prompt] * 3000, seed=1)
    rng = np.random.default_rng(0)
    first_law, weighted_law = {}, {}
    for system in systems:
        traces = prop.draw(system, 5, rng)
        counts = np.bincount([t.info["particle"] for t in traces], minlength=6)
        w = system.weights
        assert np.all(counts >= np.floor(5 * w - 1e-9)) and np.all(counts <= np.ceil(5 * w + 1e-9))
        key = tuple(traces[0].token_ids)
        first_law[key] = first_law.get(key, 0.0) + 1 / len(systems)
        for p, wi in zip(system.particles, w):
            weighted_law[tuple(p.tokens)] = weighted_law.get(tuple(p.tokens), 0.0) + wi / len(systems)
    assert total_variation(first_law, weighted_law) < 0.04  # noise ~0.02 at 3000 systems; unshuffled: >= 0.1
    positions = [[t.info["particle"] for t in prop.draw(systems[0], 5, np.random.default_rng(k))] for k in range(20)]
    assert len({tuple(p) for p in positions}) > 1  # the order changes with the generator


class FakeRow:
    """A kept row that counts how often it is made self-contained."""

    def __init__(self):
        self.token_ids, self.materialized = [], 0

    def materialize(self):
        self.materialized += 1
        return self


def test_row_cache_chains_are_bounded():
    """A row cache resumed from a kept one may share its prefix storage: after 8 links it is made self-contained."""
    row, depth = FakeRow(), 0
    for call in range(1, 20):
        out, depth = bounded_cache(row, depth)
        assert out is row and depth == (call - 1) % 8 + 1
    assert row.materialized == 2  # at the 9th and the 17th link
    assert bounded_cache(None, 5) == (None, 0)


class NoCache:
    """The same model behind the plain protocol only (no ``generate_cached``)."""

    def __init__(self, backend):
        self.b, self.eos_token_ids, self.vocab_size = backend, backend.eos_token_ids, backend.vocab_size

    def generate(self, *args, **kwargs):
        return self.b.generate(*args, **kwargs)

    def decode(self, ids):
        return self.b.decode(ids)


@pytest.mark.parametrize("every", ["block", "token"])
def test_row_caches_match_reencoding_on_hf(tiny_backend, every):
    prompts = [tiny_backend.encode("Question: what is 2 + 3?"), tiny_backend.encode("Hi there")]
    cfg = smc(
        max_new_tokens=16,
        power_block_size=4,
        smc_particles=6,
        smc_ess_threshold=0.9,
        smc_resample_every=every,
        smc_alpha_ramp=8,
        generation_batch_size=12,
    )
    backends = {"cached": tiny_backend, "plain": NoCache(tiny_backend)}
    runs = {name: build_proposal(cfg, backend).run(prompts, seed=0) for name, backend in backends.items()}
    for cached, plain in zip(runs["cached"], runs["plain"]):
        assert cached.resample_at == plain.resample_at and len(cached.resample_at) >= 2
        assert cached.cost.tokens_decoded == plain.cost.tokens_decoded
        assert cached.cost.tokens_reencoded == 0 < plain.cost.tokens_reencoded
        for a, b in zip(cached.particles, plain.particles):
            assert a.tokens == b.tokens
            for x, y in ((a.logp, b.logp), (a.logq, b.logq), (a.entropy, b.entropy)):
                assert np.allclose(x, y, atol=1e-4)
            assert a.logw == pytest.approx(b.logw, abs=1e-3)
    for system in runs["cached"]:
        for p in system.particles:
            scored = tiny_backend.score([system.prompt], [p.tokens])[0]
            assert np.allclose(scored, p.logp, atol=1e-4)
