"""Backend-neutral sampling math on logit rows: the truncated sampling distribution and one decoding step.

Any backend that computes logits itself, and any proposal that rescores a trace (``power_mh``), uses these; no
model is involved.
"""

from __future__ import annotations

import torch

from fem.generation.base import SamplingParams


def truncated_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Logits of the sampling distribution: divided by the temperature, then top-k, then top-p (float32)."""
    z = logits / params.temperature
    vocab = z.shape[-1]
    if 0 < params.top_k < vocab:
        kth = torch.topk(z, params.top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        probs = torch.softmax(sorted_z, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs
        remove = before >= params.top_p
        remove[:, 0] = False
        z = z.scatter(1, order, sorted_z.masked_fill(remove, float("-inf")))
    return z


def sample_step(
    logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step for a batch of logit rows: (token, base log p, log q, base entropy), all ``[batch]``.

    Sampling uses the inverse CDF with one uniform per row, so a row's draw does not depend on the other rows.
    """
    logits = logits.float()
    logp_all = torch.log_softmax(logits, dim=-1)
    p_all = logp_all.exp()
    entropy = -torch.where(p_all > 0, p_all * logp_all, torch.zeros_like(p_all)).sum(-1)
    if params.temperature == 0:
        token = torch.argmax(logits, dim=-1)
        logq = torch.zeros(token.shape, dtype=torch.float32, device=logits.device)
    else:
        plain = params.temperature == 1.0 and params.top_k == 0 and params.top_p >= 1.0
        logq_all = logp_all if plain else torch.log_softmax(truncated_logits(logits, params), dim=-1)
        cdf = torch.cumsum(p_all if plain else logq_all.exp(), dim=-1)
        total = cdf[:, -1:]
        target = torch.minimum(
            uniforms.to(cdf.device).unsqueeze(1) * total, torch.nextafter(total, torch.zeros_like(total))
        )
        token = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)
        logq = logq_all.gather(1, token[:, None]).squeeze(1)
    logp = logp_all.gather(1, token[:, None]).squeeze(1)
    return token, logp, logq, entropy
