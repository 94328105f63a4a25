"""vLLM's draws follow the model's law (chi-square against the exact next-token distribution of the hf reference,
with a power check: the same statistic rejects the wrong law), and seeded sampling is reproducible and independent of
the batch for prompts longer than the engine's per-step token budget (which chunked prefill would split, crashing a
seeded CPU engine)."""

from __future__ import annotations

import pytest
import torch

from fem.generation.base import SamplingParams
from fem.generation.sampling import truncated_logits

pytestmark = pytest.mark.vllm

DRAWS = 3000


def _chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's test with the categories of expected count < ``min_expected`` pooled into one."""
    expected = probs.double() * counts.sum()
    big = expected >= min_expected
    obs = torch.cat([counts[big].double(), counts[~big].double().sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = exp > 0
    if (obs[~keep] > 0).any():
        return 0.0  # a draw the law gives probability 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))  # chi2 survival


@pytest.mark.parametrize(
    "params", [SamplingParams(), SamplingParams(temperature=0.5, top_k=30), SamplingParams(top_p=0.7)], ids=str
)
def test_next_token_law_matches_the_model(vllm_backend, hf_ref, prompts, params):
    prompt = prompts[0]
    conts, _ = vllm_backend.generate(
        [prompt] * DRAWS, params, 1, generator=torch.Generator().manual_seed(11), stats=()
    )
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in conts]), minlength=vllm_backend.vocab_size)
    logits = hf_ref.next_token_logprobs([prompt])
    law = torch.softmax(truncated_logits(logits, params), dim=-1)[0]
    assert _chi_square_pvalue(counts, law) > 1e-3
    wrong = torch.softmax(truncated_logits(logits, SamplingParams(temperature=params.temperature * 1.5)), dim=-1)[0]
    assert _chi_square_pvalue(counts, wrong) < 1e-6  # the test has the power to see a biased sampler


def test_seeded_sampling_is_reproducible_and_batch_independent_with_long_prompts(vllm_backend, hf_ref):
    budget = vllm_backend.engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert not vllm_backend.engine.vllm_config.scheduler_config.enable_chunked_prefill
    text = "Question: what is 2 + 3? Let's think step by step. "
    long_prompts = [hf_ref.encode(f"{i} " + text * 60)[: vllm_backend.max_model_len - 40] for i in range(12)]
    assert sum(map(len, long_prompts)) > 2 * budget  # chunked prefill would split some of these prompts
    params = SamplingParams(temperature=0.9)
    first, _ = vllm_backend.generate(long_prompts, params, 24, generator=torch.Generator().manual_seed(7))
    again, _ = vllm_backend.generate(long_prompts, params, 24, generator=torch.Generator().manual_seed(7))
    alone, _ = vllm_backend.generate(long_prompts[:2], params, 24, generator=torch.Generator().manual_seed(7))
    other, _ = vllm_backend.generate(long_prompts, params, 24, generator=torch.Generator().manual_seed(8))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.token_ids for c in first[:2]] == [c.token_ids for c in alone]
    assert [c.token_ids for c in first] != [c.token_ids for c in other]
