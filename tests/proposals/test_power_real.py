"""On SmolLM2-135M-Instruct, power MH (both cuts) reaches higher mean log p per token than ancestral sampling."""

from __future__ import annotations

import pytest

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
]


@pytest.mark.slow
def test_power_mh_beats_ancestral_on_mean_logp():
    from fem.configs import ProposalConfig
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer
    from fem.proposals import build_proposal

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    backend = HFBackend(model, tokenizer)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q + " Think step by step."}], add_generation_prompt=True, tokenize=True
        )
        for q in QUESTIONS
    ]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    common = dict(max_new_tokens=32, generation_batch_size=12)
    ancestral = build_proposal(ProposalConfig(proposal="ancestral", **common), backend).propose(prompts, 4, seed=0)
    base = [t.mean_logp for group in ancestral for t in group]
    base_mean = sum(base) / len(base)
    for cut in ("uniform", "entropy"):
        cfg = ProposalConfig(proposal="power_mh", power_block_size=8, power_mh_steps=2, power_cut=cut, **common)
        traces = [t for group in build_proposal(cfg, backend).propose(prompts, 4, seed=0) for t in group]
        mean = sum(t.mean_logp for t in traces) / len(traces)
        assert mean > base_mean + 0.1, (cut, mean, base_mean)
        assert all(t.cost.mh_steps > 0 and t.cost.tokens_decoded >= t.num_tokens for t in traces)
