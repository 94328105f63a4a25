"""Exact table-driven LMs implementing ``GenerationBackend`` (for sampler tests and the mixing benchmark).

- ``TableLM``: the next-token distribution is a deterministic function of the context (a callable, memoised);
  token ids ``0..V-1`` are ordinary tokens, ``eos_id`` ends a response, ``bos_id`` is the one-token prompt.
- ``hashed_table_lm``: a random-looking but seeded table (small vocabulary, EOS allowed after the first token).
- ``StylizedDecisionLM``: method.md §5 — ``k`` decision positions among ``T`` tokens, flat over ``m`` options;
  option 0 leads to sharp filler (0.995), the others to flat filler (0.9). Exact decision-tuple law under
  ``p^alpha`` (product form), all-wrong start for mixing studies.
- Exact helpers: enumerate responses up to a horizon, ``p``, ``p^alpha``, total variation, and the exact
  one-step power-MH transition matrix built from the sampler's own ratio code (``fem.proposals.power``).
"""

from __future__ import annotations

import itertools
import math
import zlib
from bisect import bisect_right
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fem.generation.base import Continuation, DecodeStats, SamplingParams, StopCallback
from fem.proposals.power import MHRatio, token_term


def _sampling_probs(p: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The sampling distribution of ``params`` over base probabilities ``p`` (temperature, top-k, top-p)."""
    if params.temperature == 0:
        q = np.zeros_like(p)
        q[int(np.argmax(p))] = 1.0
        return q
    with np.errstate(divide="ignore"):
        z = np.log(p) / params.temperature
    if 0 < params.top_k < len(p):
        kth = np.sort(z)[-params.top_k]
        z = np.where(z < kth, -np.inf, z)
    z = z - np.max(z)
    q = np.exp(z)
    q /= q.sum()
    if params.top_p < 1.0:
        order = np.argsort(-q, kind="stable")
        before = np.cumsum(q[order]) - q[order]
        remove = before >= params.top_p
        remove[0] = False
        q[order[remove]] = 0.0
        q /= q.sum()
    return q


class TableLM:
    """An exact LM over a tiny vocabulary; ``dist(context) -> probabilities over vocab_size tokens``."""

    def __init__(
        self,
        dist: Callable[[tuple[int, ...]], Sequence[float]],
        vocab_size: int,
        eos_id: int,
        bos_id: int,
        names: Sequence[str] | None = None,
    ):
        self._dist = dist
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.eos_token_ids = frozenset({eos_id})
        self.names = list(names) if names is not None else [chr(ord("a") + i) for i in range(vocab_size)]
        self._probs: dict[tuple[int, ...], np.ndarray] = {}
        self._rows: dict[tuple, tuple] = {}
        self.adapter: str | None = None

    @property
    def prompt(self) -> list[int]:
        return [self.bos_id]

    def probs(self, context: Sequence[int]) -> np.ndarray:
        """Next-token probabilities after ``context`` (float64, sums to 1)."""
        key = tuple(context)
        p = self._probs.get(key)
        if p is None:
            p = np.asarray(self._dist(key), dtype=np.float64)
            p = p / p.sum()
            self._probs[key] = p
        return p

    def entropy(self, context: Sequence[int]) -> float:
        p = self.probs(context)
        nz = p[p > 0]
        return float(-(nz * np.log(nz)).sum())

    def _row(self, context: tuple[int, ...], params: SamplingParams) -> tuple:
        key = (context, params.temperature, params.top_k, params.top_p)
        row = self._rows.get(key)
        if row is None:
            p = self.probs(context)
            q = _sampling_probs(p, params)
            with np.errstate(divide="ignore"):
                lp, lq = np.log(p), np.log(q)
            cdf = np.cumsum(q)
            row = (cdf.tolist(), lp.tolist(), lq.tolist(), self.entropy(context), int(np.argmax(q)))
            self._rows[key] = row
        return row

    def generate(
        self,
        prefixes: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int | Sequence[int],
        *,
        generator: torch.Generator | None = None,
        stop_callback: StopCallback | None = None,
    ) -> tuple[list[Continuation], DecodeStats]:
        """Exact ancestral sampling; row ``i`` step ``t`` uses uniform ``U[i, t]`` (independent of other rows)."""
        n = len(prefixes)
        caps = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
        max_cap = max(caps, default=0)
        uniforms = None
        if params.temperature > 0 and max_cap > 0:
            uniforms = torch.rand(n, max_cap, generator=generator, dtype=torch.float64).tolist()
        stats = DecodeStats(tokens_encoded=sum(len(p) for p in prefixes))
        conts = []
        for i, prefix in enumerate(prefixes):
            ctx = tuple(prefix)
            cont = Continuation()
            for t in range(caps[i]):
                cdf, lp, lq, h, greedy = self._row(ctx, params)
                if uniforms is None:
                    tok = greedy
                else:
                    tok = min(bisect_right(cdf, uniforms[i][t] * cdf[-1]), len(cdf) - 1)
                    while lq[tok] == -math.inf:
                        tok -= 1
                cont.token_ids.append(tok)
                cont.logp.append(lp[tok])
                cont.logq.append(0.0 if uniforms is None else lq[tok])
                cont.entropy.append(h)
                ctx = ctx + (tok,)
                if tok == self.eos_id:
                    cont.finished = True
                    break
                if stop_callback is not None and stop_callback(i, cont):
                    cont.stopped_early = True
                    break
            stats.tokens_decoded += len(cont.token_ids)
            stats.forward_passes = max(stats.forward_passes, len(cont.token_ids))
            conts.append(cont)
        return conts, stats

    def score(self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        out = []
        for prefix, cont in zip(prefixes, continuations):
            ctx = list(prefix)
            row = []
            for tok in cont:
                p = self.probs(ctx)[tok]
                row.append(math.log(p) if p > 0 else -math.inf)
                ctx.append(tok)
            out.append(row)
        return out

    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        with np.errstate(divide="ignore"):
            return torch.tensor(np.stack([np.log(self.probs(p)) for p in prefixes]), dtype=torch.float32)

    def encode(self, text: str) -> list[int]:
        return [self.names.index(w) for w in text.split()]

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self.names[t] for t in token_ids if t not in (self.eos_id, self.bos_id))

    def load_adapter(self, path: str) -> None:
        raise ValueError("a TableLM has no adapters (it is an exact test model)")

    def unload_adapter(self) -> None:
        self.adapter = None

    # ------------------------------------------------------------------ exact enumeration
    def log_prob(self, prompt: Sequence[int], response: Sequence[int]) -> float:
        return float(sum(self.score([prompt], [response])[0]))

    def enumerate_responses(self, prompt: Sequence[int], horizon: int) -> dict[tuple[int, ...], float]:
        """Every response (ends with EOS within ``horizon``, or reaches ``horizon``) with its log p."""
        out: dict[tuple[int, ...], float] = {}

        def walk(resp: tuple[int, ...], logp: float) -> None:
            if len(resp) == horizon or (resp and resp[-1] == self.eos_id):
                out[resp] = logp
                return
            p = self.probs(tuple(prompt) + resp)
            for tok in np.nonzero(p > 0)[0]:
                walk(resp + (int(tok),), logp + math.log(p[tok]))

        walk((), 0.0)
        return out

    def power_distribution(self, prompt: Sequence[int], horizon: int, alpha: float) -> dict[tuple[int, ...], float]:
        """Exact ``p^alpha`` (normalised) over the responses of ``enumerate_responses``."""
        logs = self.enumerate_responses(prompt, horizon)
        keys = list(logs)
        w = np.array([alpha * logs[k] for k in keys])
        w = np.exp(w - w.max())
        w /= w.sum()
        return dict(zip(keys, w.tolist()))


def total_variation(p: dict, q: dict) -> float:
    """TV distance of two distributions given as ``{outcome: probability}``."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def empirical(samples: Sequence) -> dict:
    out: dict = {}
    for s in samples:
        out[s] = out.get(s, 0.0) + 1.0 / len(samples)
    return out


def hashed_table_lm(num_tokens: int = 3, *, seed: int = 0, scale: float = 1.5, eos_logit: float = -0.5) -> TableLM:
    """A seeded pseudo-random table LM: tokens ``0..num_tokens-1``, EOS, BOS (the prompt). EOS is impossible as
    the first response token; otherwise logits are Gaussian (``scale``) from a hash of the context."""
    eos, bos = num_tokens, num_tokens + 1

    def dist(ctx: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(repr(ctx).encode())])
        logits = np.append(
            rng.normal(0.0, scale, num_tokens), eos_logit + rng.normal(0.0, scale) if len(ctx) > 1 else -np.inf
        )
        p = np.exp(logits - logits.max())
        return np.append(p / p.sum(), 0.0)

    return TableLM(dist, num_tokens + 2, eos, bos, names=[str(i) for i in range(num_tokens)] + ["<eos>", "<bos>"])


class StylizedDecisionLM(TableLM):
    """method.md §5: ``k`` decisions (flat over ``m`` options) at fixed positions among ``T`` tokens.

    Tokens: ``0..m-1`` options, ``m`` filler, ``m+1`` alternative filler, ``m+2`` EOS (never drawn), ``m+3`` BOS.
    After option 0 the filler is drawn with probability ``good`` (0.995), after any other option with ``bad``
    (0.9). Responses have exactly ``T`` tokens; option 0 at every decision is the correct answer.
    """

    def __init__(
        self,
        m: int = 3,
        k: int = 3,
        T: int = 24,
        *,
        good: float = 0.995,
        bad: float = 0.9,
        positions: Sequence[int] | None = None,
    ):
        self.m, self.k, self.T, self.good, self.bad = m, k, T, good, bad
        self.positions = tuple(positions) if positions is not None else tuple(i * (T // k) for i in range(k))
        if len(self.positions) != k or max(self.positions) >= T:
            raise ValueError("need k decision positions inside the horizon")
        self.filler, self.alt = m, m + 1
        decision_at = set(self.positions)

        def dist(ctx: tuple[int, ...]) -> np.ndarray:
            resp = ctx[1:]
            p = np.zeros(m + 4)
            if len(resp) in decision_at:
                p[:m] = 1.0 / m
                return p
            last = next((t for t in reversed(resp) if t < m), 0)
            sharp = good if last == 0 else bad
            p[self.filler], p[self.alt] = sharp, 1.0 - sharp
            return p

        names = [f"o{i}" for i in range(m)] + ["f", "g", "<eos>", "<bos>"]
        super().__init__(dist, m + 4, m + 2, m + 3, names=names)

    def decisions(self, tokens: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(tokens[p]) for p in self.positions if p < len(tokens))

    def start(self, options: Sequence[int] | int = 1) -> list[int]:
        """A response with the given options (all ``options`` if an int) and main filler everywhere else."""
        opts = [options] * self.k if isinstance(options, int) else list(options)
        tokens = [self.filler] * self.T
        for pos, o in zip(self.positions, opts):
            tokens[pos] = o
        return tokens

    def segment_lengths(self) -> list[int]:
        ends = list(self.positions[1:]) + [self.T]
        return [e - p - 1 for p, e in zip(self.positions, ends)]

    def decision_distribution(self, alpha: float = 1.0) -> dict[tuple[int, ...], float]:
        """Exact law of the decision tuple under ``p^alpha`` (``alpha = 1``: the base model)."""
        z_good = self.good**alpha + (1 - self.good) ** alpha
        z_bad = self.bad**alpha + (1 - self.bad) ** alpha
        marginals = []
        for length in self.segment_lengths():
            w = np.array([z_good**length] + [z_bad**length] * (self.m - 1))
            marginals.append(w / w.sum())
        return {
            combo: float(np.prod([marginals[i][o] for i, o in enumerate(combo)]))
            for combo in itertools.product(range(self.m), repeat=self.k)
        }

    def accuracy(self, alpha: float = 1.0) -> float:
        """Probability that every decision is option 0 under ``p^alpha``."""
        return self.decision_distribution(alpha)[(0,) * self.k]


def q_suffixes(
    lm: TableLM, prefix: tuple[int, ...], cap: int, params: SamplingParams
) -> list[tuple[tuple[int, ...], float]]:
    """Every proposal suffix from ``prefix`` (until EOS or ``cap`` tokens) with its probability under the proposal q."""
    prompt = tuple(lm.prompt)
    out: list[tuple[tuple[int, ...], float]] = []

    def rec(s: tuple[int, ...], prob: float) -> None:
        if len(s) == cap or (s and s[-1] == lm.eos_id):
            out.append((s, prob))
            return
        _, _, lq, _, _ = lm._row(prompt + prefix + s, params)
        for tok, logq in enumerate(lq):
            if logq > -math.inf:
                rec(s + (tok,), prob * math.exp(logq))

    rec((), 1.0)
    return out


def exact_mh_kernel(
    lm: TableLM,
    horizon: int,
    alpha: float,
    law,
    *,
    proposal_temperature: float | None = None,
    compat: bool = False,
) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The exact one-step power-MH transition matrix at a fixed stage horizon, over every response of length
    ``1..horizon`` (complete or not), built with the sampler's own ratio code. Returns ``(states, K)``."""
    prompt = tuple(lm.prompt)
    tau = proposal_temperature if proposal_temperature is not None else 1.0 / alpha
    params = SamplingParams(temperature=tau)
    clamp = abs(tau * alpha - 1.0) < 1e-9
    states: list[tuple[int, ...]] = []

    def walk(resp: tuple[int, ...]) -> None:
        if resp:
            states.append(resp)
        if len(resp) == horizon or (resp and resp[-1] == lm.eos_id):
            return
        for tok in np.nonzero(lm.probs(prompt + resp) > 0)[0]:
            walk(resp + (int(tok),))

    walk(())
    index = {s: i for i, s in enumerate(states)}

    def stats(resp: Sequence[int]) -> tuple[list[float], list[float]]:
        terms, ents = [], []
        for t in range(len(resp)):
            _, lp, lq, h, _ = lm._row(prompt + tuple(resp[:t]), params)
            terms.append(token_term(lp[resp[t]], lq[resp[t]], alpha, clamp))
            ents.append(h)
        return terms, ents

    K = np.zeros((len(states), len(states)))
    for x in states:
        xi = index[x]
        x_terms, x_ent = stats(x)
        c = law.probs(x_ent)
        for j in range(len(x)):
            if c[j] <= 0:
                continue
            cap = (len(x) if compat else horizon) - j
            for s, qs in q_suffixes(lm, x[:j], cap, params):
                y = x[:j] + s
                ratio = MHRatio(law, x_terms, x_ent, j, compat=compat)
                y_terms, y_ent = stats(y)
                for t in range(j, len(y)):
                    ratio.push(y_terms[t], y_ent[t])
                log_r = ratio.value()
                acc = 1.0 if log_r >= 0 else math.exp(log_r)
                K[xi, index[y]] += c[j] * qs * acc
                K[xi, xi] += c[j] * qs * (1.0 - acc)
    return states, K
