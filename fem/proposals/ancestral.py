"""``ancestral``: plain sampling from the model with temperature / top-k / top-p, n samples per prompt batched."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from fem.configs import ProposalConfig
from fem.generation.base import DecodeStats, GenerationBackend, SamplingParams
from fem.proposals.base import Cost, Trace


class AncestralProposal:
    """One decode per sample; identical prompts in a batch share their prefill (backend-side)."""

    name = "ancestral"

    def __init__(self, config: ProposalConfig, backend: GenerationBackend):
        self.config = config
        self.backend = backend
        self.params = SamplingParams(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
        self.last_stats = DecodeStats()

    def propose(self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0) -> list[list[Trace]]:
        generator = torch.Generator().manual_seed(seed)
        self.last_stats = DecodeStats()
        rows = [list(p) for p in prompts for _ in range(num_samples)]
        traces: list[Trace] = []
        size = self.config.generation_batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            t0 = time.perf_counter()
            conts, stats = self.backend.generate(chunk, self.params, self.config.max_new_tokens, generator=generator)
            wall = (time.perf_counter() - t0) / len(chunk)
            for s in ("tokens_decoded", "tokens_encoded", "forward_passes"):
                setattr(self.last_stats, s, getattr(self.last_stats, s) + getattr(stats, s))
            for cont in conts:
                cost = Cost(tokens_decoded=len(cont.token_ids), forward_passes=len(cont.token_ids), wall_s=wall)
                traces.append(
                    Trace(
                        token_ids=cont.token_ids,
                        text=self.backend.decode(cont.token_ids),
                        logp=cont.logp,
                        logq=cont.logq,
                        entropy=cont.entropy,
                        finished=cont.finished,
                        cost=cost,
                        info={"proposal": self.name, "temperature": self.params.temperature},
                    )
                )
        return [traces[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]
