"""``power_mh``: stagewise Metropolis-Hastings towards ``p(y|x)^alpha`` (method.md §2, power_sampling.md §6.9).

Stage k has horizon ``L_k = min(k B, T)``: unfinished traces are extended to ``L_k`` with the proposal, then
``N`` MH steps run. One step draws a cut ``j ~ c(.|x)`` and ``u ~ U(0,1)``, regenerates the suffix from
``x[:j]`` with the proposal (base model at temperature ``1/alpha`` by default) up to the stage horizon, and
accepts iff ``log u < log R`` with

    log R = sum_{t>=j} [alpha log p(y_t) - log q(y_t)] - sum_{t>=j} [alpha log p(x_t) - log q(x_t)]
            + log c(j|y) - log c(j|x)

(full suffixes on both sides, ``c(.|y)`` on the proposed trace with stored prefix entropies). With the
tempered proposal and no truncation every per-token term is ``log sum_v p(v)^alpha <= 0`` (clamped to ``<= 0``
against rounding) and ``log c(j|y)`` only decreases as ``y`` grows, so the partial ratio is non-increasing:
a proposal is stopped as soon as it falls to ``log u`` (exact early rejection; same decisions).

``reference_compat`` reproduces the published kernels: cap = current length, current suffix truncated to the
proposal's length, no length term for the uniform cut (entropy cut keeps its cut term). Biased; for comparison.

Chains (prompts x samples) advance in lockstep, ``generation_batch_size`` at a time; backends that support cached
generation (``SupportsCachedGeneration``, e.g. ``HFBackend``) keep each chain's KV cache and re-encode one token per
proposal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fem.configs import ProposalConfig
from fem.generation.base import (
    Continuation,
    DecodeStats,
    GenerationBackend,
    SamplingParams,
    SupportsCachedGeneration,
)
from fem.generation.sampling import truncated_logits
from fem.proposals.base import Cost, Trace
from fem.proposals.cuts import CutLaw

_CLAMP_TOL = 1e-9


def token_term(logp: float, logq: float, alpha: float, clamp: bool) -> float:
    """Per-token log target/proposal ratio ``alpha log p - log q`` (clamped to ``<= 0`` under the tempered identity)."""
    value = alpha * logp - logq
    return min(value, 0.0) if clamp else value


@dataclass
class Chain:
    """One MH chain: the current response and its stored per-position statistics."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    logq: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    terms: list[float] = field(default_factory=list)
    finished: bool = False
    cache: Any = None
    cost: Cost = field(default_factory=Cost)
    stage_steps: list[int] = field(default_factory=list)
    stage_accepts: list[int] = field(default_factory=list)
    early_rejections: int = 0
    stages: int = 0

    def append(self, cont: Continuation, terms: list[float]) -> None:
        self.tokens += cont.token_ids
        self.logp += cont.logp
        self.logq += cont.logq
        self.entropy += cont.entropy
        self.terms += terms
        self.finished = cont.finished


class MHRatio:
    """``log R`` of one proposal from cut ``j`` of chain ``x``, accumulated token by token (float64)."""

    def __init__(
        self,
        law: CutLaw,
        x_terms: Sequence[float],
        x_entropy: Sequence[float],
        j: int,
        *,
        compat: bool,
        weights: list[float] | None = None,
    ):
        self.law, self.j, self.compat = law, j, compat
        self.x_terms = x_terms
        if weights is None:
            weights = law.weights(x_entropy)
        self.log_cx = law.log_prob(j, x_entropy, weights)
        self.cut = law.running(x_entropy, j, weights)
        self.base = -math.fsum(x_terms[j:]) - self.log_cx
        self.sum_terms = 0.0
        self.m = 0

    def push(self, term: float, entropy: float) -> None:
        """Add the proposal's next token (its per-token term and base entropy)."""
        if self.m > 0:  # position j's entropy is the stored one (a function of the shared prefix)
            self.cut.add(entropy)
        self.sum_terms += term
        self.m += 1

    def partial(self) -> float:
        """The exact ratio so far; never increases as tokens are pushed (tempered proposal, exact mode)."""
        return self.base + self.sum_terms + self.cut.log_prob()

    def value(self) -> float:
        """The final ``log R`` once the whole proposal was pushed."""
        if not self.compat:
            return self.partial()
        kept = math.fsum(self.x_terms[self.j : self.j + self.m])
        cut_term = 0.0 if self.law.kind == "uniform" else self.cut.log_prob() - self.log_cx
        return self.sum_terms - kept + cut_term


def rescore(
    backend: GenerationBackend, prompt: Sequence[int], tokens: Sequence[int], params: SamplingParams
) -> Continuation:
    """Per-token base log p, log q under ``params`` and base entropy of a given response (for chain starts)."""
    prefixes = [list(prompt) + list(tokens[:t]) for t in range(len(tokens))]
    logp_all = backend.next_token_logprobs(prefixes).double()
    idx = torch.tensor(list(tokens))[:, None]
    p_all = logp_all.exp()
    entropy = -torch.where(p_all > 0, p_all * logp_all, torch.zeros_like(p_all)).sum(-1)
    logq_all = torch.log_softmax(truncated_logits(logp_all, params), dim=-1)
    eos = backend.eos_token_ids
    return Continuation(
        token_ids=list(tokens),
        logp=logp_all.gather(1, idx).squeeze(1).tolist(),
        logq=logq_all.gather(1, idx).squeeze(1).tolist(),
        entropy=entropy.tolist(),
        finished=bool(tokens) and tokens[-1] in eos,
    )


class PowerMHProposal:
    """Stagewise power MH (uniform or entropy cut), exact by default."""

    name = "power_mh"

    def __init__(self, config: ProposalConfig, backend: GenerationBackend):
        self.config = config
        self.backend = backend
        self.alpha = float(config.power_alpha)
        self.law = CutLaw(config.power_cut, float(config.power_beta), float(config.power_epsilon))
        self.params = SamplingParams(temperature=config.proposal_temperature, top_k=config.top_k, top_p=config.top_p)
        self.compat = bool(config.power_reference_compat)
        self.tempered = (
            abs(config.proposal_temperature * self.alpha - 1.0) < _CLAMP_TOL
            and config.top_k == 0
            and config.top_p >= 1.0
        )
        self.early_rejection = bool(config.power_early_rejection) and self.tempered and not self.compat
        self.cached = isinstance(backend, SupportsCachedGeneration)
        self.last_stats = DecodeStats()

    # ------------------------------------------------------------------ backend calls
    def _generate(self, chains: list[Chain], prefixes, caps, generator, callback=None, reencode: bool = True):
        if self.cached:
            res = self.backend.generate_cached(
                prefixes,
                self.params,
                caps,
                caches=[c.cache for c in chains],
                keep_cache=True,
                generator=generator,
                stop_callback=callback,
            )
            conts, stats, caches, encoded = res.continuations, res.stats, res.caches, res.encoded
        else:
            conts, stats = self.backend.generate(
                prefixes, self.params, caps, generator=generator, stop_callback=callback
            )
            caches, encoded = [None] * len(chains), [len(p) for p in prefixes]
        for s in ("tokens_decoded", "tokens_encoded", "forward_passes"):
            setattr(self.last_stats, s, getattr(self.last_stats, s) + getattr(stats, s))
        for chain, cont, enc in zip(chains, conts, encoded):
            chain.cost.tokens_decoded += len(cont.token_ids)
            chain.cost.forward_passes += len(cont.token_ids)
            if reencode:
                chain.cost.tokens_reencoded += enc
        return conts, caches

    def _terms(self, cont: Continuation) -> list[float]:
        return [token_term(lp, lq, self.alpha, self.tempered) for lp, lq in zip(cont.logp, cont.logq)]

    # ------------------------------------------------------------------ the kernel
    def extend(self, chains: list[Chain], horizon: int, generator: torch.Generator, *, first: bool = False) -> None:
        """Extend unfinished chains shorter than ``horizon`` with the proposal (the stage's initial state)."""
        todo = [c for c in chains if not c.finished and len(c.tokens) < horizon]
        if not todo:
            return
        prefixes = [c.prompt + c.tokens for c in todo]
        caps = [horizon - len(c.tokens) for c in todo]
        conts, caches = self._generate(todo, prefixes, caps, generator, reencode=not first)
        for chain, cont, cache in zip(todo, conts, caches):
            chain.append(cont, self._terms(cont))
            chain.cache = cache.materialize() if cache is not None else None

    def mh_step(
        self, chains: list[Chain], horizon: int, rng: np.random.Generator, generator: torch.Generator
    ) -> list[bool]:
        """One MH step for every chain in lockstep; returns the accept decisions."""
        if not chains:
            return []
        ratios: list[MHRatio] = []
        log_us: list[float] = []
        prefixes, caps = [], []
        for chain in chains:
            weights = self.law.weights(chain.entropy)
            j, _ = self.law.sample(chain.entropy, rng, weights)
            log_us.append(math.log(rng.random() or np.finfo(float).tiny))
            ratios.append(MHRatio(self.law, chain.terms, chain.entropy, j, compat=self.compat, weights=weights))
            prefixes.append(chain.prompt + chain.tokens[:j])
            caps.append((len(chain.tokens) if self.compat else horizon) - j)

        def push_new(row: int, cont: Continuation) -> MHRatio:
            ratio = ratios[row]
            for t in range(ratio.m, len(cont.token_ids)):
                ratio.push(token_term(cont.logp[t], cont.logq[t], self.alpha, self.tempered), cont.entropy[t])
            return ratio

        callback: Callable[[int, Continuation], bool] | None = None
        if self.early_rejection:
            callback = lambda row, cont: push_new(row, cont).partial() <= log_us[row]  # noqa: E731
        conts, caches = self._generate(chains, prefixes, caps, generator, callback)
        decisions = []
        for row, (chain, cont, cache) in enumerate(zip(chains, conts, caches)):
            chain.cost.mh_steps += 1
            if cont.stopped_early:
                chain.early_rejections += 1
                decisions.append(False)
                continue
            accept = log_us[row] < push_new(row, cont).value()
            decisions.append(accept)
            if accept:
                self._accept(chain, ratios[row], cont, cache)
        return decisions

    def _accept(self, chain: Chain, ratio: MHRatio, cont: Continuation, cache: Any) -> None:
        j = ratio.j
        chain.cost.mh_accepts += 1
        chain.tokens, chain.logp, chain.logq = chain.tokens[:j], chain.logp[:j], chain.logq[:j]
        stored_h = chain.entropy[j]
        chain.entropy, chain.terms = chain.entropy[:j], chain.terms[:j]
        chain.append(cont, self._terms(cont))
        chain.entropy[j] = stored_h  # H_j is a function of the kept prefix: keep the stored value
        # the proposal's cache shares the kept prefix with the old one: one copy now, after the batch is freed
        chain.cache = cache.materialize() if cache is not None else None

    # ------------------------------------------------------------------ schedule
    def stage_horizons(self) -> list[int]:
        T, B = self.config.max_new_tokens, self.config.block_size
        return [min(k * B, T) for k in range(1, math.ceil(T / B) + 1)]

    def _run_chunk(self, chains: list[Chain], rng: np.random.Generator, generator: torch.Generator) -> None:
        horizons = self.stage_horizons()
        live = list(chains)
        for k, horizon in enumerate(horizons):
            self.extend(live, horizon, generator, first=(k == 0))
            for chain in live:
                chain.stage_steps.append(0)
                chain.stage_accepts.append(0)
                chain.stages = k + 1
            for _ in range(self.config.power_mh_steps):
                decisions = self.mh_step(live, horizon, rng, generator)
                for chain, accept in zip(live, decisions):
                    chain.stage_steps[-1] += 1
                    chain.stage_accepts[-1] += int(accept)
            if self.config.power_early_stop:
                live = [c for c in live if not c.finished]
            if not live:
                break

    def to_trace(self, chain: Chain) -> Trace:
        steps = chain.cost.mh_steps
        return Trace(
            token_ids=list(chain.tokens),
            text=self.backend.decode(chain.tokens),
            logp=list(chain.logp),
            logq=list(chain.logq),
            entropy=list(chain.entropy),
            finished=chain.finished,
            cost=chain.cost,
            info={
                "proposal": self.name,
                "cut": self.law.kind,
                "stages": chain.stages,
                "stage_steps": chain.stage_steps,
                "stage_accepts": chain.stage_accepts,
                "acceptance_rate": chain.cost.mh_accepts / steps if steps else 0.0,
                "early_rejections": chain.early_rejections,
                "reference_compat": self.compat,
            },
        )

    def propose(self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0) -> list[list[Trace]]:
        """``num_samples`` power-MH traces per prompt (chains of one chunk advance in lockstep)."""
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        self.last_stats = DecodeStats()
        chains = [Chain(prompt=list(p)) for p in prompts for _ in range(num_samples)]
        size = self.config.generation_batch_size
        for start in range(0, len(chains), size):
            chunk = chains[start : start + size]
            t0 = time.perf_counter()
            self._run_chunk(chunk, rng, generator)
            wall = time.perf_counter() - t0
            for chain in chunk:
                chain.cost.wall_s = wall / len(chunk)
                chain.cache = None
        traces = [self.to_trace(c) for c in chains]
        return [traces[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]

    def start_chains(self, prompts: Sequence[Sequence[int]], starts: Sequence[Sequence[int]]) -> list[Chain]:
        """Chains initialised at given responses (rescored through the backend), e.g. for mixing studies."""
        chains = []
        for prompt, tokens in zip(prompts, starts):
            chain = Chain(prompt=list(prompt))
            cont = rescore(self.backend, prompt, tokens, self.params)
            chain.append(cont, self._terms(cont))
            chains.append(chain)
        return chains

    def run_mh(
        self,
        chains: list[Chain],
        horizon: int,
        steps: int,
        *,
        seed: int = 0,
        on_step: Callable[[int, list[Chain]], None] | None = None,
    ) -> list[Chain]:
        """``steps`` MH steps at a fixed horizon for every chain (lockstep); ``on_step(step, chains)`` after each."""
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        size = self.config.generation_batch_size
        for step in range(steps):
            for start in range(0, len(chains), size):
                self.mh_step(chains[start : start + size], horizon, rng, generator)
            if on_step is not None:
                on_step(step + 1, chains)
        return chains
