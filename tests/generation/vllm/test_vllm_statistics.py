"""The statistics contract on vLLM: per-token logp, logq and entropy of vLLM's own draws agree with the ``hf``
reference backend on the same tokens (fp32, 1e-3), for every sampling setting; raw and processed log-probs are not
swapped; ``stats=`` skips what is not asked; the stop callback sees complete statistics; statistics survive vLLM's
preemption (the session engine's KV cache is small on purpose); a second in-process engine is refused."""

from __future__ import annotations

import copy

import pytest
import torch

from fem.generation.base import SamplingParams
from fem.proposals.power import rescore

pytestmark = pytest.mark.vllm

TOL = 1e-3
ALPHA = 4.0
SETTINGS = [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=1.0 / ALPHA),
    SamplingParams(temperature=1.0 / ALPHA, top_k=5),
    SamplingParams(temperature=0.7, top_p=0.8),
    SamplingParams(temperature=1.0, top_k=20, top_p=0.9),
]


def _reference(hf_ref, prompt, tokens, params):
    """logp, logq and entropy of ``tokens`` after ``prompt`` computed by the hf backend (teacher forcing)."""
    return rescore(hf_ref, prompt, tokens, params if params.temperature > 0 else SamplingParams())


def _max_gaps(hf_ref, prompts, conts, params):
    gaps = {"logp": 0.0, "logq": 0.0, "entropy": 0.0}
    for prompt, cont in zip(prompts, conts):
        ref = _reference(hf_ref, prompt, cont.token_ids, params)
        for name in gaps:
            ours, theirs = getattr(cont, name), getattr(ref, name)
            if name == "logq" and params.temperature == 0:
                theirs = [0.0] * len(ours)
            assert len(ours) == len(theirs) == len(cont.token_ids)
            gaps[name] = max([gaps[name]] + [abs(a - b) for a, b in zip(ours, theirs)])
    return gaps


@pytest.mark.parametrize("params", SETTINGS + [SamplingParams(temperature=0.0)], ids=str)
def test_statistics_match_hf_on_vllm_draws(vllm_backend, hf_ref, prompts, params):
    conts, stats = vllm_backend.generate(prompts, params, 16, generator=torch.Generator().manual_seed(0))
    assert stats.tokens_decoded == sum(len(c.token_ids) for c in conts) > 0
    gaps = _max_gaps(hf_ref, prompts, conts, params)
    assert max(gaps.values()) < TOL, gaps


def test_raw_and_processed_logprobs_not_swapped(vllm_backend, hf_ref, prompts):
    """At temperature 1/alpha with top-k, logq (processed) and logp (raw) differ by a lot; each matches its own
    reference. The same check on a continuation with the two swapped fails."""
    params = SamplingParams(temperature=1.0 / ALPHA, top_k=5)
    conts, _ = vllm_backend.generate(prompts, params, 16, generator=torch.Generator().manual_seed(1))
    spread = [abs(p - q) for c in conts for p, q in zip(c.logp, c.logq)]
    assert sum(spread) / len(spread) > 0.1
    assert max(_max_gaps(hf_ref, prompts, conts, params).values()) < TOL
    for c in conts:
        c.logp, c.logq = c.logq, c.logp
    with pytest.raises(AssertionError):
        assert max(_max_gaps(hf_ref, prompts, conts, params).values()) < TOL


def test_skipped_statistics_are_empty_and_the_rest_unchanged(vllm_backend, prompts):
    params = SamplingParams(temperature=0.7)
    full, _ = vllm_backend.generate(prompts, params, 12, generator=torch.Generator().manual_seed(2))
    only_logp, _ = vllm_backend.generate(
        prompts, params, 12, generator=torch.Generator().manual_seed(2), stats=["logp"]
    )
    bare, _ = vllm_backend.generate(prompts, params, 12, generator=torch.Generator().manual_seed(2), stats=())
    for a, b, c in zip(full, only_logp, bare):
        assert a.token_ids == b.token_ids == c.token_ids
        assert b.logq == [] and b.entropy == [] and b.logp == pytest.approx(a.logp, abs=1e-6)
        assert c.logp == c.logq == c.entropy == []
    with pytest.raises(ValueError, match="unknown statistics"):
        vllm_backend.generate(prompts, params, 4, stats=["logits"])


def test_stop_callback_sees_statistics_and_stops_the_row(vllm_backend, prompts):
    params = SamplingParams(temperature=0.8)
    free, _ = vllm_backend.generate(prompts, params, 12, generator=torch.Generator().manual_seed(3))
    seen = []

    def stop_after_three(row, cont):
        seen.append((row, len(cont.token_ids), len(cont.logp), len(cont.logq), len(cont.entropy)))
        return row != 0 and len(cont.token_ids) >= 3

    conts, _ = vllm_backend.generate(
        prompts, params, 12, generator=torch.Generator().manual_seed(3), stop_callback=stop_after_three
    )
    assert all(n == lp == lq == h for _, n, lp, lq, h in seen)
    for row, (stopped, ref) in enumerate(zip(conts, free)):
        if row == 0 or ref.finished and len(ref.token_ids) <= 3:
            assert stopped.token_ids == ref.token_ids and not stopped.stopped_early
            continue
        assert stopped.stopped_early and stopped.token_ids == ref.token_ids[:3]
        assert stopped.logp == pytest.approx(ref.logp[:3], abs=1e-6)


def test_per_row_caps_and_eos(vllm_backend, prompts):
    caps = [0, 1, 5, 9]
    conts, _ = vllm_backend.generate(prompts, SamplingParams(), caps, generator=torch.Generator().manual_seed(4))
    for cont, cap in zip(conts, caps):
        assert len(cont.token_ids) <= cap
        assert cont.finished == (bool(cont.token_ids) and cont.token_ids[-1] in vllm_backend.eos_token_ids)
        assert cont.finished or len(cont.token_ids) == cap
    with pytest.raises(ValueError, match="max_model_len"):
        vllm_backend.generate([prompts[0]], SamplingParams(), vllm_backend.max_model_len)


def test_requests_stop_on_the_backends_eos_ids_only(vllm_backend, prompts):
    """vLLM would also stop at the EOS of the model's generation config: a backend whose EOS set leaves it out decodes
    past it (and ``score`` teacher-forces a continuation through it), as the hf backend does."""
    model_eos = 5  # the tiny tokenizer's <|im_end|>, the EOS of the model's generation config
    assert vllm_backend.eos_token_ids == {model_eos}
    view = copy.copy(vllm_backend)
    view.eos_token_ids = frozenset({0})  # <pad>: never drawn by this model
    conts, _ = view.generate(prompts * 4, SamplingParams(), 24, generator=torch.Generator().manual_seed(8))
    through = [c.token_ids for c in conts if model_eos in c.token_ids[:-1]]
    assert through and all(len(tokens) == 24 for tokens in through)
    assert len(view.score(prompts[:1], [through[0]])[0]) == 24


def test_score_and_next_token_logprobs_match_hf(vllm_backend, hf_ref, prompts):
    conts, _ = vllm_backend.generate(prompts, SamplingParams(), 10, generator=torch.Generator().manual_seed(5))
    tokens = [c.token_ids for c in conts]
    ours, ref = vllm_backend.score(prompts, tokens), hf_ref.score(prompts, tokens)
    for a, b, cont in zip(ours, ref, conts):
        assert a == pytest.approx(b, abs=TOL) and a == pytest.approx(cont.logp, abs=TOL)
    with pytest.raises(ValueError, match="vocabulary"):
        vllm_backend.score(prompts[:1], [[vllm_backend.vocab_size]])
    with pytest.raises(ValueError, match="vocabulary"):
        vllm_backend.generate([[1, -3]], SamplingParams(), 2)
    rows = vllm_backend.next_token_logprobs(prompts)
    assert rows.shape == (len(prompts), vllm_backend.vocab_size) and rows.dtype == torch.float32
    assert (rows - hf_ref.next_token_logprobs(prompts)).abs().max() < TOL


def test_forced_readout_hits_the_prefix_cache(vllm_backend, hf_ref):
    """A read-out after a long prompt and its decoded rationale encodes only the tail the cache does not hold."""
    block = vllm_backend.engine.vllm_config.cache_config.block_size
    prompt = (hf_ref.encode("Instruction: which response is better? " * 80))[: 2 * block + 7]
    conts, _ = vllm_backend.generate([prompt], SamplingParams(), 40, generator=torch.Generator().manual_seed(6))
    readout = prompt + conts[0].token_ids + hf_ref.encode(" Verdict:")
    before = vllm_backend.readout_tokens_encoded
    rows = vllm_backend.next_token_logprobs([readout])
    encoded = vllm_backend.readout_tokens_encoded - before
    assert 0 < encoded <= len(readout) - 2 * block, (encoded, len(readout), block)
    assert (rows - hf_ref.next_token_logprobs([readout])).abs().max() < TOL


def test_statistics_survive_preemption(vllm_backend, hf_ref):
    """The session engine's KV cache holds 39 blocks of 32 tokens: this batch makes vLLM preempt and recompute."""
    scheduler = vllm_backend.engine.engine_core.engine_core.scheduler
    preempt, preempted = scheduler._preempt_request, []
    scheduler._preempt_request = lambda *a, **k: preempted.append(1) or preempt(*a, **k)
    try:
        prompts = [hf_ref.encode(f"{i} Question: what is 2 + 3? Let's think step by step. " * 2) for i in range(12)]
        params = SamplingParams(temperature=0.5, top_k=40)
        view = copy.copy(vllm_backend)
        view.eos_token_ids = frozenset({0})  # <pad>, never drawn: every row grows to 150 tokens, 6 blocks each
        conts, _ = view.generate(prompts, params, 150, generator=torch.Generator().manual_seed(9))
    finally:
        scheduler._preempt_request = preempt
    assert preempted, "no preemption happened: the test checks nothing"
    assert max(_max_gaps(hf_ref, prompts, conts, params).values()) < TOL


def test_a_second_in_process_engine_is_refused(vllm_backend, vllm_model_dir, hf_ref):
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions

    with pytest.raises(RuntimeError, match="already open"):
        VLLMBackend(hf_ref.model, hf_ref.tokenizer, model_dir=str(vllm_model_dir), options=EngineOptions())


def test_base_statistics_match_log_softmax_with_and_without_masked_logits():
    from fem.generation.vllm_stats import base_statistics

    logits = torch.tensor([[0.5, -1.0, 3.0, 2.0], [1.0, float("-inf"), -2.0, 0.0], [40.0, -60.0, 0.0, 1.0]])
    rows, lse, entropy = base_statistics(logits.to(torch.bfloat16).float())
    logp = torch.log_softmax(rows, dim=-1)
    p = logp.exp()
    expected = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
    assert entropy == pytest.approx(expected.tolist(), abs=1e-6)
    assert (rows - lse[:, None])[torch.isfinite(rows)].tolist() == pytest.approx(logp[torch.isfinite(rows)].tolist())
