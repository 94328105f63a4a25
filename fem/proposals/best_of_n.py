"""``best_of_n``: draw ``best_of_n`` ancestral samples per returned sample, keep the highest mean base log p."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import add

from fem.configs import ProposalConfig
from fem.generation.base import GenerationBackend
from fem.proposals.ancestral import AncestralProposal
from fem.proposals.base import Trace


class BestOfNProposal:
    """Compute-matched baseline: the winner's cost is the sum over all its ``n`` draws."""

    name = "best_of_n"

    def __init__(self, config: ProposalConfig, backend: GenerationBackend):
        self.config = config
        self.backend = backend
        self.n = int(config.best_of_n)
        self.sampler = AncestralProposal(config, backend)

    def propose(self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0) -> list[list[Trace]]:
        draws = self.sampler.propose(prompts, num_samples * self.n, seed=seed)
        out: list[list[Trace]] = []
        for per_prompt in draws:
            picked = []
            for s in range(num_samples):
                group = per_prompt[s * self.n : (s + 1) * self.n]
                best = max(group, key=lambda t: t.mean_logp)
                best.cost = reduce(add, (t.cost for t in group))
                best.info = {
                    **best.info,
                    "proposal": self.name,
                    "best_of_n": self.n,
                    "candidates_mean_logp": [t.mean_logp for t in group],
                }
                picked.append(best)
            out.append(picked)
        return out
