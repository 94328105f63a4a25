"""Proposal registry, ancestral statistics, best_of_n selection and cost counters."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch

from fem.configs import ProposalConfig
from fem.errors import ConfigError
from fem.proposals import PROPOSALS, build_proposal, check_proposal_name, resolve_proposal_class
from fem.proposals.ancestral import AncestralProposal
from fem.proposals.base import Proposal
from fem.proposals.best_of_n import BestOfNProposal
from fem.proposals.power import PowerMHProposal
from fem.proposals.smc import PowerSMCProposal
from fem.testing.table_lm import empirical, total_variation


def test_registry_names_and_dotted_paths(table_lm):
    expected = {
        "ancestral": AncestralProposal,
        "power_mh": PowerMHProposal,
        "power_smc": PowerSMCProposal,
        "best_of_n": BestOfNProposal,
    }
    for name, cls in expected.items():
        proposal = build_proposal(ProposalConfig(proposal=name), table_lm)
        assert type(proposal) is cls and isinstance(proposal, Proposal)
    assert set(PROPOSALS) == set(expected)
    dotted = build_proposal(ProposalConfig(), table_lm, name="fem.proposals.power.PowerMHProposal")
    assert isinstance(dotted, PowerMHProposal)


def test_user_class_plugs_in_by_dotted_path(table_lm, tmp_path, monkeypatch):
    (tmp_path / "my_props.py").write_text(
        textwrap.dedent("""
        class Greedyish:
            name = "greedyish"
            def __init__(self, config, backend):
                self.config, self.backend = config, backend
            def propose(self, prompts, num_samples=1, *, seed=0):
                return [["x"] * num_samples for _ in prompts]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    check_proposal_name("my_props.Greedyish")
    prop = build_proposal(ProposalConfig(proposal="my_props.Greedyish"), table_lm)
    assert prop.propose([[1], [2]], 2) == [["x", "x"], ["x", "x"]]
    sys.modules.pop("my_props", None)


@pytest.mark.parametrize(
    "name",
    [
        "power",
        "nope.module.Class",
        "fem.proposals.ancestral.Nope",
        "fem.proposals.cuts.CUT_LAWS",
        "fem.proposals.cuts.CutLaw",
    ],
)
def test_bad_names_raise_config_error(name):
    with pytest.raises(ConfigError) as err:
        check_proposal_name(name)
    assert err.value.field == "proposal" and err.value.fix
    with pytest.raises(ConfigError):
        resolve_proposal_class(name)


def test_ancestral_matches_base_distribution(table_lm):
    horizon = 3
    cfg = ProposalConfig(max_new_tokens=horizon, generation_batch_size=512)
    traces = build_proposal(cfg, table_lm).propose([table_lm.prompt], 6000, seed=0)[0]
    exact = {k: math.exp(v) for k, v in table_lm.enumerate_responses(table_lm.prompt, horizon).items()}
    assert total_variation(empirical([tuple(t.token_ids) for t in traces]), exact) < 0.03
    t = traces[0]
    assert t.logp == pytest.approx(table_lm.score([table_lm.prompt], [t.token_ids])[0])
    assert t.cost.tokens_decoded == len(t.token_ids) and t.cost.mh_steps == 0
    assert t.finished == (t.token_ids[-1] == table_lm.eos_id)


def test_ancestral_greedy_and_top_k_one(table_lm):
    for cfg in (ProposalConfig(max_new_tokens=4, temperature=0.0), ProposalConfig(max_new_tokens=4, top_k=1)):
        traces = build_proposal(cfg, table_lm).propose([table_lm.prompt], 5, seed=0)[0]
        assert len({tuple(t.token_ids) for t in traces}) == 1


def test_ancestral_groups_samples_per_prompt(tiny_backend):
    prompts = [tiny_backend.encode("Hi"), tiny_backend.encode("Question: 2 + 3?")]
    prop = build_proposal(ProposalConfig(max_new_tokens=5, generation_batch_size=4), tiny_backend)
    out = prop.propose(prompts, 3, seed=0)
    assert [len(o) for o in out] == [3, 3]
    assert prop.last_stats.tokens_encoded == sum(len(p) for p in prompts) + len(prompts[1])  # chunks of 4 rows
    assert out[0][0].text == tiny_backend.decode(out[0][0].token_ids)


def test_best_of_n_picks_highest_mean_logp_and_sums_cost(table_lm):
    cfg = ProposalConfig(proposal="best_of_n", best_of_n=4, max_new_tokens=5)
    picked = build_proposal(cfg, table_lm).propose([table_lm.prompt], 3, seed=2)[0]
    draws = AncestralProposal(cfg, table_lm).propose([table_lm.prompt], 12, seed=2)[0]
    for s, trace in enumerate(picked):
        group = draws[4 * s : 4 * s + 4]
        assert trace.mean_logp == max(t.mean_logp for t in group)
        assert trace.cost.tokens_decoded == sum(len(t.token_ids) for t in group)
        assert trace.info["candidates_mean_logp"] == [t.mean_logp for t in group]
    assert len({tuple(t.token_ids) for t in draws}) > 1


def test_power_cost_counters(table_lm):
    cfg = ProposalConfig(
        proposal="power_mh",
        max_new_tokens=6,
        power_block_size=2,
        power_mh_steps=3,
        power_early_stop=True,
        generation_batch_size=16,
    )
    prop = build_proposal(cfg, table_lm)
    traces = prop.propose([table_lm.prompt, table_lm.prompt], 10, seed=0)
    flat = [t for group in traces for t in group]
    assert len(traces) == 2 and all(len(g) == 10 for g in traces)
    assert sum(t.cost.tokens_decoded for t in flat) == prop.last_stats.tokens_decoded
    for t in flat:
        assert t.cost.mh_steps == 3 * t.info["stages"] == sum(t.info["stage_steps"])
        assert t.cost.mh_accepts == sum(t.info["stage_accepts"])
        assert t.cost.tokens_decoded >= len(t.token_ids)
        assert t.info["stages"] == 3 or t.finished  # early stop only returns finished traces
        assert t.logp == pytest.approx(table_lm.score([table_lm.prompt], [t.token_ids])[0])
    assert any(t.info["stages"] < 3 for t in flat)


def test_power_with_kv_reuse_matches_reencoding(tiny_backend):
    class NoCache:  # the same model behind the plain protocol only
        def __init__(self, backend):
            self.b, self.eos_token_ids, self.vocab_size = backend, backend.eos_token_ids, backend.vocab_size

        def generate(self, *args, **kwargs):
            return self.b.generate(*args, **kwargs)

        def decode(self, ids):
            return self.b.decode(ids)

    prompts = [tiny_backend.encode("Question: what is 2 + 3?"), tiny_backend.encode("Hi there")]
    results = {}
    for name, backend in (("cached", tiny_backend), ("plain", NoCache(tiny_backend))):
        cfg = ProposalConfig(
            proposal="power_mh",
            max_new_tokens=16,
            power_block_size=8,
            power_mh_steps=3,
            power_cut="entropy",
            generation_batch_size=8,
        )
        results[name] = [t for group in build_proposal(cfg, backend).propose(prompts, 3, seed=0) for t in group]
    cached, plain = results["cached"], results["plain"]
    assert [t.token_ids for t in cached] == [t.token_ids for t in plain]
    assert [t.cost.mh_accepts for t in cached] == [t.cost.mh_accepts for t in plain]
    assert sum(t.cost.tokens_reencoded for t in cached) * 4 < sum(t.cost.tokens_reencoded for t in plain)
    for t, prompt in zip(cached, [prompts[0]] * 3 + [prompts[1]] * 3):
        scored = tiny_backend.score([prompt], [t.token_ids])[0]
        assert max(abs(a - b) for a, b in zip(scored, t.logp)) < 1e-4
    assert torch.get_num_threads() >= 1
