"""``power_smc``: sequential Monte Carlo towards ``p(y|x)^alpha`` (Power-SMC, Azizi et al., arXiv 2602.10273).

Each prompt gets ``N = smc_particles`` particles decoded in lockstep from the base model at temperature ``tau``:
``power_proposal_temperature`` if set, else ``1/a_t`` (below) at the middle of each decode call, i.e. ``1/alpha``
once any ramp is over (the variance-optimal prefix-only proposal). Full support only (no top-k / top-p: a
truncated proposal cannot reach every response, so no weight makes it exact). Prompts are batched
``generation_batch_size // N`` at a time (at least one); all their live particles share every backend call.

Targets. After ``t`` tokens every particle targets ``gamma_t(y) = p(y)^{a_t}`` -- a live particle with its
prefix ``y_{1:t}``, a finished one (EOS) with its whole response -- with the ramp
``a_t = 1 + (alpha - 1) min(t / R, 1)`` (``R = smc_alpha_ramp``; ``a_t = alpha`` when ``R = 0``). With
``S = sum log p`` of the particle's tokens before ``t``, the incremental log weight at token ``t`` is

    live:      a_t (S + log p(y_t)) - a_{t-1} S - log q(y_t)
    finished:  (a_t - a_{t-1}) S

i.e. without a ramp ``alpha log p - log q`` per token, which with ``tau = 1/alpha`` is ``log sum_v p(v)^alpha``
(token-independent), and 0 for a finished particle: its weight stays fixed; it keeps its place in resampling.
The run ends when every particle is finished (EOS, or the horizon ``T = max_new_tokens``), with one last step
to ``p(y)^alpha``: ``log w += (alpha - a_t) S`` (0 unless the ramp outlasts the run). The weights telescope:
``log w = alpha log p(y) - log q(y)`` for a particle never resampled, whatever ``R``.

Resampling. Normalised weights ``W``, ``ESS = 1 / sum W^2``; when ``ESS < smc_ess_threshold * N`` the particles
are replaced by ``N`` draws of ancestors (``systematic``: one uniform, ``N`` evenly spaced points; or
``multinomial``) and every log weight is reset to ``log mean w`` (which keeps ``log Z_hat = log mean w`` an
unbiased estimate of ``sum_y p(y)^alpha``). Checked at block boundaries (``smc_resample_every: block``, every
``power_block_size`` tokens) or after every token (``token``): particles are then decoded a few tokens ahead, the
ESS is computed after each of those tokens, and at the first that falls below the threshold the particles are
cut back to it (the tokens after it are discarded, and counted) and resampled; the lookahead adapts (the last
interval, doubled while no resampling happens, at most the block size). Checking ahead changes no law: the
decision at token ``t`` depends only on tokens ``<= t``. No resampling once every particle is finished. The
default threshold 1 resamples at every check: a tempered proposal's weights tell a good prefix from a bad one
only a little per token, and resampling at each check multiplies the good ones early (on the stylized models it
beat 0.5 at 4 and 16 particles, see ``benchmarks/bench_power.py``); systematic resampling leaves near-equal
weights nearly as they are. With token checks that is a backend call per token.

KV. With a backend that supports cached generation (``SupportsCachedGeneration``, e.g. ``HFBackend``) each particle
keeps its row cache; a resampled particle continues from its ancestor's cache (shared, never re-encoded: each later
call feeds one pending token per row); a row's cache may share the prefix part with the cache it grew from (it does
on ``HFBackend``), so after 8 calls resumed from a kept cache it is made self-contained (``CachedRow.materialize``).
Other backends re-encode every prefix (exact, slower), counted as ``len(prefix) - 1`` tokens per row and call after
the first (a backend that de-duplicates identical prefixes feeds fewer: see ``last_stats``).

Output. ``num_samples`` traces per prompt are ``num_samples`` ancestors drawn from the final particles with
probabilities ``W`` by the ``smc_resampling`` scheme, in random order: each one, on its own, is a draw from the
SMC approximation of ``p^alpha`` (systematic points shuffled: a uniformly placed point). They share one particle
system; systematic draws repeat a particle only as far as its weight demands (``floor`` or ``ceil`` of
``num_samples * W``), multinomial ones at random. Cost: every decoded token of the system (particles later
discarded included) and every re-encoded prefix token, split evenly over the returned traces.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from fem.configs import ProposalConfig
from fem.errors import ConfigError
from fem.generation.base import Continuation, DecodeStats, GenerationBackend, SamplingParams, SupportsCachedGeneration
from fem.proposals.base import Trace
from fem.proposals.particles import (
    Particle,
    ParticleSystem,
    bounded_cache,
    ess,
    log_mean_exp,
    log_normalize,
    resample_indices,
    share_cost,
)

__all__ = ["Particle", "ParticleSystem", "PowerSMCProposal", "ess", "log_normalize", "resample_indices"]


class PowerSMCProposal:
    """Power-SMC with exact weights (alpha ramp and finished particles included); see the module docstring."""

    name = "power_smc"

    def __init__(self, config: ProposalConfig, backend: GenerationBackend):
        if config.top_k != 0 or config.top_p < 1.0:
            raise ConfigError(
                f"power_smc needs a full-support proposal (got top_k={config.top_k}, top_p={config.top_p})",
                field="top_k" if config.top_k else "top_p",
                fix="set top_k: 0 and top_p: 1.0 (truncation would leave responses unreachable)",
            )
        self.config = config
        self.backend = backend
        self.alpha = float(config.power_alpha)
        self.ramp = int(config.smc_alpha_ramp)
        self.n = int(config.smc_particles)
        self.threshold = float(config.smc_ess_threshold)
        self.scheme = config.smc_resampling
        self.per_token = config.smc_resample_every == "token"
        self.block = config.block_size
        self.horizon = config.max_new_tokens
        self.fixed_temperature = config.power_proposal_temperature
        self.cached = isinstance(backend, SupportsCachedGeneration)
        self.last_stats = DecodeStats()

    # ------------------------------------------------------------------ targets
    def alpha_at(self, t: int) -> float:
        """The intermediate exponent ``a_t`` after ``t`` tokens (``alpha`` once the ramp is over)."""
        if self.ramp <= 0:
            return self.alpha
        return 1.0 + (self.alpha - 1.0) * min(t / self.ramp, 1.0)

    def temperature(self, t0: int, span: int) -> float:
        """The proposal temperature of a call decoding tokens ``t0+1 .. t0+span``: fixed, or ``1/a`` mid-span."""
        if self.fixed_temperature is not None:
            return float(self.fixed_temperature)
        return 1.0 / self.alpha_at(t0 + (span + 1) // 2)

    def trajectory(self, particle: Particle, cont: Continuation, t0: int) -> tuple[list[float], list[float]]:
        """The particle's log weight and ``S`` after each token of ``cont`` (decoded after its ``t0`` tokens)."""
        weights, sums, lw, s = [], [], particle.logw, particle.sum_logp
        for t, (lp, lq) in enumerate(zip(cont.logp, cont.logq), start=t0 + 1):
            lw += self.alpha_at(t) * (s + lp) - self.alpha_at(t - 1) * s - lq
            s += lp
            weights.append(lw)
            sums.append(s)
        return weights, sums

    def logw_at(self, system: ParticleSystem, conts: dict[int, Continuation], trajs: dict, cut: int) -> np.ndarray:
        """Every particle's log weight once the system is ``cut`` tokens further: decoded particles at their
        token ``min(cut, len)``; those finished before then (and the particles not decoded: finished earlier)
        follow the ramp with their whole response, ``(a_t - a_{t'}) S``."""
        t0 = system.length
        a_end = self.alpha_at(t0 + cut)
        out = system.logw
        for i, particle in enumerate(system.particles):
            if i in conts:
                weights, sums = trajs[i]
                k = min(cut, len(weights))
                out[i] = weights[k - 1] + (a_end - self.alpha_at(t0 + k)) * sums[k - 1]
            else:
                out[i] += (a_end - self.alpha_at(t0)) * particle.sum_logp
        return out

    # ------------------------------------------------------------------ decoding
    def _decode(self, prefixes, caps, caches, params, generator):
        """One backend call; returns (continuations, new row caches, tokens fed per row)."""
        if self.cached:
            res = self.backend.generate_cached(
                prefixes, params, caps, caches=caches, keep_cache=True, generator=generator
            )
            conts, stats, new_caches, fed = res.continuations, res.stats, res.caches, res.encoded
        else:
            conts, stats = self.backend.generate(prefixes, params, caps, generator=generator)
            new_caches, fed = [None] * len(prefixes), [len(p) for p in prefixes]
        for s in ("tokens_decoded", "tokens_encoded", "forward_passes"):
            setattr(self.last_stats, s, getattr(self.last_stats, s) + getattr(stats, s))
        return conts, new_caches, fed

    def _span(self, system: ParticleSystem) -> int:
        room = self.horizon - system.length
        return min(system.lookahead if self.per_token else self.block, room)

    def step(self, systems: list[ParticleSystem], generator: torch.Generator, rng: np.random.Generator) -> None:
        """Advance every unfinished system by one call (a block, or up to the next resampling in token mode)."""
        groups: dict[float, list[tuple[ParticleSystem, int]]] = {}
        for system in systems:
            if not system.done:
                tau = self.temperature(system.length, self._span(system))
                groups.setdefault(tau, []).extend((system, i) for i, p in enumerate(system.particles) if not p.done)
        decoded: dict[int, dict[int, Continuation]] = {}
        for tau, rows in groups.items():
            prefixes = [s.prompt + s.particles[i].tokens for s, i in rows]
            caps = [self._span(s) for s, _ in rows]
            caches = [s.particles[i].cache for s, i in rows]
            conts, new_caches, fed = self._decode(prefixes, caps, caches, SamplingParams(temperature=tau), generator)
            for (system, i), cont, cache, n_fed in zip(rows, conts, new_caches, fed):
                particle = system.particles[i]
                particle.cache, particle.cache_depth = bounded_cache(cache, particle.cache_depth)
                system.cost.tokens_decoded += len(cont.token_ids)
                system.cost.forward_passes += len(cont.token_ids)
                if system.calls:  # the prompt's own encoding is not a re-encoding; one pending token per row is
                    system.cost.tokens_reencoded += max(n_fed - 1, 0)
                decoded.setdefault(id(system), {})[i] = cont
        for system in systems:
            if id(system) in decoded:
                self._commit(system, decoded[id(system)], rng)

    def _commit(self, system: ParticleSystem, conts: dict[int, Continuation], rng: np.random.Generator) -> None:
        t0, span = system.length, self._span(system)
        trajs = {i: self.trajectory(system.particles[i], c, t0) for i, c in conts.items()}
        cut = span
        if self.per_token:  # the first token after which the ESS falls below the threshold (finished: no check)
            for s in range(1, span):
                finished = all(c.finished and len(c.token_ids) <= s for c in conts.values())
                if not finished and ess(self.logw_at(system, conts, trajs, s)) < self.threshold * self.n:
                    cut = s
                    break
        logw = self.logw_at(system, conts, trajs, cut)
        for i, particle in enumerate(system.particles):
            particle.logw = float(logw[i])
        for i, cont in conts.items():
            p, k = system.particles[i], min(cut, len(cont.token_ids))
            p.tokens += cont.token_ids[:k]
            p.logp += cont.logp[:k]
            p.logq += cont.logq[:k]
            p.entropy += cont.entropy[:k]
            p.sum_logp = trajs[i][1][k - 1]
            p.eos = cont.finished and k == len(cont.token_ids)
            p.done = p.eos or t0 + k >= self.horizon
            if p.done:
                p.cache = None
            system.tokens_discarded += len(cont.token_ids) - k
        system.length = t0 + cut
        system.calls += 1
        if self.per_token:
            system.lookahead = cut if cut < span else min(2 * span, self.block)
        if system.done:  # the last target: p^alpha for every particle (a no-op once the ramp is over)
            for p in system.particles:
                p.logw += (self.alpha - self.alpha_at(system.length)) * p.sum_logp
            return
        value = ess(logw)
        system.ess_min = min(system.ess_min, value / self.n)
        if value < self.threshold * self.n:
            self.resample(system, rng)

    def resample(self, system: ParticleSystem, rng: np.random.Generator) -> None:
        """Replace the particles by ``N`` ancestors drawn by weight; reset every weight to the mean weight."""
        logw = system.logw
        mean = log_mean_exp(logw)
        seen: set[int] = set()
        new = []
        for a in resample_indices(log_normalize(logw), self.n, rng, self.scheme).tolist():
            new.append(system.particles[a] if a not in seen else system.particles[a].copy())
            seen.add(a)
        for p in new:
            p.logw = mean
        system.particles = new
        system.resample_at.append(system.length)

    # ------------------------------------------------------------------ runs
    def run(self, prompts: Sequence[Sequence[int]], *, seed: int = 0) -> list[ParticleSystem]:
        """One particle system per prompt, run to the end (systems of a chunk share every backend call)."""
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        self.last_stats = DecodeStats()
        systems = [
            ParticleSystem(prompt=list(p), particles=[Particle() for _ in range(self.n)], lookahead=self.block)
            for p in prompts
        ]
        per_chunk = max(1, self.config.generation_batch_size // self.n)
        for start in range(0, len(systems), per_chunk):
            chunk = systems[start : start + per_chunk]
            t0 = time.perf_counter()
            while any(not s.done for s in chunk):
                self.step(chunk, generator, rng)
            for system in chunk:
                system.cost.wall_s = (time.perf_counter() - t0) / len(chunk)
                for p in system.particles:
                    p.cache = None
        return systems

    def propose(self, prompts: Sequence[Sequence[int]], num_samples: int = 1, *, seed: int = 0) -> list[list[Trace]]:
        """``num_samples`` traces per prompt, drawn from its final weighted particles (see Output above)."""
        systems = self.run(prompts, seed=seed)
        rng = np.random.default_rng([seed, 1])
        return [self.draw(system, num_samples, rng) for system in systems]

    def draw(self, system: ParticleSystem, num_samples: int, rng: np.random.Generator) -> list[Trace]:
        weights = system.weights
        picks = rng.permutation(resample_indices(weights, num_samples, rng, self.scheme)).tolist()
        unique = len({tuple(p.tokens) for p in system.particles})
        traces = []
        for j, i in enumerate(picks):
            p = system.particles[i]
            traces.append(
                Trace(
                    token_ids=list(p.tokens),
                    text=self.backend.decode(p.tokens),
                    logp=list(p.logp),
                    logq=list(p.logq),
                    entropy=list(p.entropy),
                    finished=p.eos,
                    cost=share_cost(system.cost, j, num_samples),
                    info={
                        "proposal": self.name,
                        "particles": self.n,
                        "particle": i,
                        "weight": float(weights[i]),
                        "log_z": system.log_z,
                        "final_ess": ess(system.logw) / self.n,
                        "ess_min": system.ess_min,
                        "resamples": len(system.resample_at),
                        "resample_at": list(system.resample_at),
                        "unique_particles": unique,
                        "tokens_discarded": system.tokens_discarded,
                        "alpha": self.alpha,
                        "alpha_ramp": self.ramp,
                    },
                )
            )
        return traces
