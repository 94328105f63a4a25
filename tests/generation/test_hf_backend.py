"""HFBackend on the tiny random Llama: statistics against full forward passes, stops, batching, KV reuse, adapters."""

from __future__ import annotations

import math

import pytest
import torch

from fem.errors import ConfigError
from fem.generation import build_backend
from fem.generation.base import SamplingParams
from fem.generation.hf import HFBackend
from fem.generation.sampling import truncated_logits

PROMPTS = ["Question: what is 2 + 3?", "Hi", "Verdict: A Confidence: 80% The answer is"]


def _prompts(backend):
    return [backend.encode(p) for p in PROMPTS]


def _reference_rows(backend, prefix, tokens):
    """Full-vocabulary base log-probs at every new position, from uncached forward passes."""
    return backend.next_token_logprobs([list(prefix) + list(tokens[:t]) for t in range(len(tokens))]).double()


def test_logp_matches_full_forward(tiny_backend):
    prompts = _prompts(tiny_backend)
    conts, stats = tiny_backend.generate(prompts, SamplingParams(), 16, generator=torch.Generator().manual_seed(0))
    assert stats.tokens_decoded == sum(len(c.token_ids) for c in conts)
    assert stats.tokens_encoded == sum(len(p) for p in prompts)
    for prefix, cont in zip(prompts, conts):
        assert len(cont.token_ids) == len(cont.logp) == len(cont.logq) == len(cont.entropy) > 0
        scored = tiny_backend.score([prefix], [cont.token_ids])[0]
        assert max(abs(a - b) for a, b in zip(scored, cont.logp)) < 1e-4
        assert cont.logq == pytest.approx(cont.logp, abs=1e-5)  # temperature 1, no truncation: q = p


def test_logq_and_entropy_under_temperature_and_top_k(tiny_backend):
    params = SamplingParams(temperature=0.7, top_k=5)
    prefix = _prompts(tiny_backend)[0]
    conts, _ = tiny_backend.generate([prefix] * 3, params, 12, generator=torch.Generator().manual_seed(1))
    for cont in conts:
        rows = _reference_rows(tiny_backend, prefix, cont.token_ids)
        logq_rows = torch.log_softmax(truncated_logits(rows, params), dim=-1)
        for t, tok in enumerate(cont.token_ids):
            assert tok in torch.topk(rows[t], 5).indices.tolist()
            assert cont.logq[t] == pytest.approx(float(logq_rows[t, tok]), abs=1e-4)
            assert cont.logp[t] == pytest.approx(float(rows[t, tok]), abs=1e-4)
            p = rows[t].exp()
            assert cont.entropy[t] == pytest.approx(float(-(p * rows[t]).sum()), abs=1e-4)
        assert all(lq >= lp for lq, lp in zip(cont.logq, cont.logp))  # sharper q puts more mass on its draws here


def test_greedy_is_argmax_and_batch_equals_single(tiny_backend):
    prompts = _prompts(tiny_backend)
    batched, _ = tiny_backend.generate(prompts, SamplingParams(temperature=0), 12)
    for prefix, cont in zip(prompts, batched):
        single, _ = tiny_backend.generate([prefix], SamplingParams(temperature=0), 12)
        assert single[0].token_ids == cont.token_ids
        assert max(abs(a - b) for a, b in zip(single[0].logp, cont.logp)) < 1e-5
        assert max(abs(a - b) for a, b in zip(single[0].entropy, cont.entropy)) < 1e-5
        rows = _reference_rows(tiny_backend, prefix, cont.token_ids)
        assert cont.token_ids == rows.argmax(-1).tolist()
        assert cont.logq == [0.0] * len(cont.token_ids)


def test_eos_stop_and_per_row_caps(tiny_backend, tiny_model_dir):
    prefix = _prompts(tiny_backend)[0]
    sampled, _ = tiny_backend.generate(
        [prefix, prefix], SamplingParams(), 10, generator=torch.Generator().manual_seed(5)
    )
    toks = sampled[0].token_ids
    stop_at = next(i for i, t in enumerate(toks) if t not in toks[:i] and i >= 1)
    backend = HFBackend(tiny_backend.model, tiny_backend.tokenizer, eos_token_ids=[toks[stop_at]])
    conts, _ = backend.generate(
        [prefix, prefix], SamplingParams(), [10, 1], generator=torch.Generator().manual_seed(5)
    )
    assert conts[0].token_ids == toks[: stop_at + 1] and conts[0].finished
    assert len(conts[1].token_ids) == 1 and not conts[1].finished
    assert tiny_backend.tokenizer.eos_token_id in tiny_backend.eos_token_ids


def test_stop_callback_drops_rows(tiny_backend):
    prompts = _prompts(tiny_backend)
    calls = []

    def stop(row, cont):
        calls.append(row)
        return row == 1 and len(cont.token_ids) >= 2

    conts, _ = tiny_backend.generate(
        prompts, SamplingParams(), 8, generator=torch.Generator().manual_seed(0), stop_callback=stop
    )
    assert len(conts[1].token_ids) == 2 and conts[1].stopped_early
    assert len(conts[0].token_ids) == 8 and not conts[0].stopped_early
    assert calls.count(1) == 2


def test_deterministic_under_generator(tiny_backend):
    prompts = _prompts(tiny_backend)
    a, _ = tiny_backend.generate(prompts, SamplingParams(), 10, generator=torch.Generator().manual_seed(3))
    b, _ = tiny_backend.generate(prompts, SamplingParams(), 10, generator=torch.Generator().manual_seed(3))
    c, _ = tiny_backend.generate(prompts, SamplingParams(), 10, generator=torch.Generator().manual_seed(4))
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_shared_prompt_is_encoded_once(tiny_backend):
    prefix = _prompts(tiny_backend)[0]
    conts, stats = tiny_backend.generate([prefix] * 4, SamplingParams(), 6, generator=torch.Generator().manual_seed(0))
    assert stats.tokens_encoded == len(prefix)
    assert len({tuple(c.token_ids) for c in conts}) > 1  # the rows still sample independently


def test_kv_reuse_matches_reencoding(tiny_backend):
    prompts = _prompts(tiny_backend)
    first = tiny_backend.generate_cached(
        prompts, SamplingParams(), 10, keep_cache=True, generator=torch.Generator().manual_seed(0)
    )
    assert all(rc is not None and rc.length == len(p) + 9 for rc, p in zip(first.caches, prompts))
    cuts = [0, 3, 7]
    prefixes = [list(p) + c.token_ids[:j] for p, c, j in zip(prompts, first.continuations, cuts)]
    reused = tiny_backend.generate_cached(prefixes, SamplingParams(temperature=0), 8, caches=first.caches)
    fresh = tiny_backend.generate_cached(prefixes, SamplingParams(temperature=0), 8)
    assert reused.encoded == [1, 1, 1]
    assert reused.stats.tokens_encoded == 3 and fresh.stats.tokens_encoded == sum(len(p) for p in prefixes)
    for prefix, a, b in zip(prefixes, reused.continuations, fresh.continuations):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logp, b.logp)) < 1e-5
        scored = tiny_backend.score([prefix], [a.token_ids])[0]
        assert max(abs(x - y) for x, y in zip(scored, a.logp)) < 1e-4


def test_kept_cache_shares_the_reused_prefix(tiny_backend):
    """A cache returned from a reused one copies only the new positions; materialized, it equals a fresh cache,
    and a chain of shared caches (not materialized) still decodes exactly."""
    prompts = _prompts(tiny_backend)
    greedy = SamplingParams(temperature=0)
    first = tiny_backend.generate_cached(prompts, greedy, 6, keep_cache=True)
    prefixes = [list(p) + c.token_ids[:j] for p, c, j in zip(prompts, first.continuations, [1, 3, 5])]
    second = tiny_backend.generate_cached(prefixes, greedy, 4, caches=first.caches, keep_cache=True)
    fresh = tiny_backend.generate_cached(prefixes, greedy, 4, keep_cache=True)
    for prefix, rc, old, ref in zip(prefixes, second.caches, first.caches, fresh.caches):
        assert rc.base is old and rc.base_length == len(prefix) - 1
        assert rc.keys[0].shape[1] == rc.length - rc.base_length == 1 + 3  # the fed token + 3 decoded ones
        whole = rc.materialize()
        assert whole.base is None and whole.length == ref.length and whole.token_ids == ref.token_ids
        for a, b in zip(whole.keys + whole.values, ref.keys + ref.values):
            assert torch.allclose(a, b, atol=1e-5)
    third_prefixes = [list(rc.token_ids) for rc in second.caches]
    third = tiny_backend.generate_cached(third_prefixes, greedy, 5, caches=second.caches, keep_cache=True)
    check = tiny_backend.generate_cached(third_prefixes, greedy, 5)
    assert third.encoded == [1, 1, 1] and third.caches[0].base.base is first.caches[0]
    assert [c.token_ids for c in third.continuations] == [c.token_ids for c in check.continuations]


def test_stale_cache_is_not_trusted(tiny_backend):
    prompts = _prompts(tiny_backend)
    first = tiny_backend.generate_cached(
        prompts[:1], SamplingParams(), 6, keep_cache=True, generator=torch.Generator().manual_seed(0)
    )
    other = list(prompts[0][:2]) + [t + 1 for t in prompts[0][2:]]  # diverges after two tokens
    reused = tiny_backend.generate_cached([other], SamplingParams(temperature=0), 5, caches=first.caches)
    fresh = tiny_backend.generate_cached([other], SamplingParams(temperature=0), 5)
    assert reused.encoded == [len(other) - 2]
    assert reused.continuations[0].token_ids == fresh.continuations[0].token_ids


def _make_adapter(backend, path, seed):
    from peft import LoraConfig, get_peft_model

    from fem.models import load_model

    torch.manual_seed(seed)
    base = load_model(str(backend._tiny_dir))
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(path)
    return path


def test_load_adapter_changes_outputs_and_unload_restores(tiny_model_dir, tmp_path):
    from fem.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    backend = HFBackend(model, tokenizer)
    backend._tiny_dir = tiny_model_dir
    prefix = [backend.encode(PROMPTS[0])]
    before = backend.next_token_logprobs(prefix)
    backend.load_adapter(str(_make_adapter(backend, tmp_path / "a1", 1)))
    with_a1 = backend.next_token_logprobs(prefix)
    assert (with_a1 - before).abs().max() > 1e-3
    greedy_a1, _ = backend.generate(prefix, SamplingParams(temperature=0), 5)
    backend.load_adapter(str(_make_adapter(backend, tmp_path / "a2", 2)))
    with_a2 = backend.next_token_logprobs(prefix)
    assert (with_a2 - with_a1).abs().max() > 1e-3 and (with_a2 - before).abs().max() > 1e-3
    backend.unload_adapter()
    assert torch.allclose(backend.next_token_logprobs(prefix), before, atol=1e-6)
    assert backend.adapter_path is None


def test_build_backend_registry(tiny_backend):
    backend = build_backend("hf", tiny_backend.model, tiny_backend.tokenizer)
    assert isinstance(backend, HFBackend) and backend.vocab_size == tiny_backend.vocab_size
    with pytest.raises(ConfigError, match="vLLM"):
        build_backend("vllm", None, None)
    with pytest.raises(ConfigError) as err:
        build_backend("nope", None, None)
    assert err.value.field == "backend"


def test_next_token_logprobs_normalised(tiny_backend):
    rows = tiny_backend.next_token_logprobs(_prompts(tiny_backend))
    assert rows.shape == (3, tiny_backend.vocab_size) and rows.dtype == torch.float32
    assert torch.allclose(rows.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert math.isfinite(float(rows.max()))


def test_readout_reuses_the_prompts_generate_encoded(tiny_backend):
    """Inside reuse_prompts the forced-answer read-out re-encodes only what follows the prompt, with the same
    log-probabilities as a fresh encoding; the kept prompts are dropped at exit and bounded in tokens."""
    prompts = _prompts(tiny_backend)
    cue = tiny_backend.encode("\n\nVerdict:")
    with tiny_backend.reuse_prompts():
        conts, _ = tiny_backend.generate(prompts, SamplingParams(), 5, generator=torch.Generator().manual_seed(0))
        readouts = [list(p) + c.token_ids + cue for p, c in zip(prompts, conts)]
        start = tiny_backend.readout_tokens_encoded
        reused = tiny_backend.next_token_logprobs(readouts)
        assert tiny_backend.readout_tokens_encoded - start == sum(len(r) - len(p) for r, p in zip(readouts, prompts))
    assert not tiny_backend._prompt_cache  # weights may change after the block: nothing survives it
    start = tiny_backend.readout_tokens_encoded
    fresh = tiny_backend.next_token_logprobs(readouts)
    assert tiny_backend.readout_tokens_encoded - start == sum(len(r) for r in readouts)
    assert torch.allclose(reused, fresh, atol=1e-4)
    assert not torch.allclose(fresh[0], fresh[1], atol=1e-3)  # the rows differ: a mixed-up cache would show

    with tiny_backend.reuse_prompts():  # an open read-out (greedy generate after the cue) extends the prompt alike
        tiny_backend.generate(prompts, SamplingParams(), 5, generator=torch.Generator().manual_seed(0))
        kept = len(tiny_backend._prompt_cache)
        reused_open = tiny_backend.generate_cached(readouts, SamplingParams(temperature=0), 4)
        # the read-out prefixes are kept too (room permitting): read-outs after them (stated_mean) start there
        assert len(tiny_backend._prompt_cache) == kept + len(readouts)
        start = tiny_backend.readout_tokens_encoded
        after = tiny_backend.next_token_logprobs([r + cue[-1:] for r in readouts])
        assert tiny_backend.readout_tokens_encoded - start == len(readouts)
    fresh_open = tiny_backend.generate_cached(readouts, SamplingParams(temperature=0), 4)
    assert reused_open.encoded == [len(r) - len(p) for r, p in zip(readouts, prompts)]
    assert [c.token_ids for c in reused_open.continuations] == [c.token_ids for c in fresh_open.continuations]
    assert torch.allclose(after, tiny_backend.next_token_logprobs([r + cue[-1:] for r in readouts]), atol=1e-4)

    small = HFBackend(tiny_backend.model, tiny_backend.tokenizer, prompt_cache_tokens=len(prompts[0]) + 1)
    with small.reuse_prompts():
        small.generate(prompts[:2], SamplingParams(temperature=0), 2)
        assert list(small._prompt_cache) == [tuple(prompts[1])]  # the older prompt was evicted
        small.generate(readouts[1:2], SamplingParams(temperature=0), 2)
        assert list(small._prompt_cache) == [tuple(prompts[1])]  # a read-out prefix never evicts a prompt
