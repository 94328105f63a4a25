"""``HFBackend``: a batched custom decode loop over a transformers causal LM, with per-token statistics and KV reuse.

Layout: every batch is left-padded; an explicit 2D attention mask and explicit position ids make rows with
different prefix lengths (and holes between a reused cache and newly fed tokens) exact. Per token the loop keeps
only scalars (sampled id, base log p at temperature 1, log q under the sampling params, base entropy); no
full-vocabulary rows are stored.

KV reuse: identical prefixes in one call are encoded once and the cache is repeated across rows; callers that
keep a row's cache (``RowCache``, returned by ``generate_cached(keep_cache=True)``) can decode from any prefix that
extends a prefix of its tokens, re-encoding only the tokens the cache does not cover (one token for an MH cut).
Inside ``reuse_prompts()`` the prompts ``generate`` encodes are also kept (bounded LRU), and a later prefix that
extends one (the forced-answer read-out after a rationale, by ``next_token_logprobs`` or greedy ``generate``)
re-encodes only what follows the prompt.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from peft import PeftModel

from fem.generation.base import CachedGeneration, Continuation, DecodeStats, SamplingParams, StopCallback
from fem.generation.kv_cache import PreallocatedCache, PreallocatedLayer, PromptCache, RowCache, row_cache
from fem.generation.sampling import sample_step


def eos_ids_of(model: Any, tokenizer: Any) -> frozenset[int]:
    """All EOS ids: the tokenizer's and the model's generation config's (int or list)."""
    ids: set[int] = set()
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if value is None:
            continue
        ids.update([int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)])
    return frozenset(ids)


class HFBackend:
    """GenerationBackend over a transformers causal LM (custom batched loop, preallocated KV cache, KV reuse)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        eos_token_ids: Sequence[int] | None = None,
        score_batch_size: int = 16,
        prompt_cache_tokens: int = 16384,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = (
            frozenset(int(i) for i in eos_token_ids) if eos_token_ids is not None else eos_ids_of(model, tokenizer)
        )
        if not self.eos_token_ids:
            raise ValueError("the tokenizer and the model's generation config name no EOS token")
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else min(self.eos_token_ids)
        self.score_batch_size = score_batch_size
        self._prompt_cache = PromptCache(prompt_cache_tokens)
        self.readout_tokens_encoded = 0  # tokens next_token_logprobs fed to the model (the rest came from the cache)
        self._base_model = model
        self._adapter_path: str | None = None
        self._own_adapter: str | None = None
        params = inspect.signature(type(model).forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    @property
    def adapter_path(self) -> str | None:
        return self._adapter_path

    def reuse_prompts(self) -> AbstractContextManager[None]:
        """Within the block, keep the KV of the prompts ``generate`` encodes (LRU, at most ``prompt_cache_tokens``
        tokens) for ``next_token_logprobs`` to extend. Emptied when the outermost block exits: the weights may change
        between blocks (a new adapter, an M-step)."""
        return self._prompt_cache.session()

    def load_adapter(self, path: str) -> None:
        """Load (or swap in) a PEFT adapter; later calls decode with it."""
        path = str(path)
        if isinstance(self._base_model, PeftModel):  # the caller handed us a PeftModel: add a named adapter
            name = f"fem_{abs(hash(path)) % 10**8}"
            if self._own_adapter is not None:
                self._base_model.delete_adapter(self._own_adapter)
            self._base_model.load_adapter(path, adapter_name=name)
            self._base_model.set_adapter(name)
            self._own_adapter = name
            self.model = self._base_model
        else:
            if isinstance(self.model, PeftModel):
                self.model = self.model.unload()
            self.model = PeftModel.from_pretrained(self._base_model, path, is_trainable=False)
        self.model.eval()
        self._adapter_path = path

    def unload_adapter(self) -> None:
        """Back to the model this backend was built with."""
        if self._own_adapter is not None:
            self._base_model.delete_adapter(self._own_adapter)
            self._own_adapter = None
        elif isinstance(self.model, PeftModel) and self.model is not self._base_model:
            self._base_model = self.model.unload()
        self.model = self._base_model
        self._adapter_path = None

    # ------------------------------------------------------------------ forward helpers
    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device, torch.long),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: cache},
        )
        return out.logits[:, -1, :].float()

    def _prefill(self, prefixes: Sequence[Sequence[int]], caches: Sequence[RowCache | None], room: int = 0):
        """Encode each prefix (reusing its cache where valid) into a cache with ``room`` more positions.
        Returns (logits, cache, mask, next_pos, fed)."""
        reuse, fed = [], []
        for prefix, rc in zip(prefixes, caches):
            usable = 0
            if rc is not None and rc.length > 0:
                usable = min(rc.length, len(prefix) - 1)
                if rc.token_ids[:usable] != list(prefix[:usable]):
                    usable = next((i for i, (a, b) in enumerate(zip(rc.token_ids[:usable], prefix)) if a != b), usable)
            reuse.append(usable)
            fed.append(list(prefix[usable:]))
        n = len(prefixes)
        width_c = max(reuse)
        width_u = max(len(f) for f in fed)
        mask = torch.zeros(n, width_c + width_u, dtype=torch.bool)
        input_ids = torch.full((n, width_u), self.pad_token_id, dtype=torch.long)
        positions = torch.zeros(n, width_u, dtype=torch.long)
        for i, (c, f) in enumerate(zip(reuse, fed)):
            mask[i, width_c - c : width_c] = True
            mask[i, width_c + width_u - len(f) :] = True
            input_ids[i, width_u - len(f) :] = torch.tensor(f, dtype=torch.long)
            positions[i, width_u - len(f) :] = torch.arange(c, c + len(f))
        capacity = width_c + width_u + room
        if width_c > 0:
            first = next(rc for rc, c in zip(caches, reuse) if c > 0)
            layers = []
            for layer, (k_ref, v_ref) in enumerate(zip(first.keys, first.values)):
                k = k_ref.new_empty(n, k_ref.shape[0], capacity, k_ref.shape[2])
                v = v_ref.new_empty(n, v_ref.shape[0], capacity, v_ref.shape[2])
                k[:, :, :width_c] = 0
                v[:, :, :width_c] = 0
                for i, (rc, c) in enumerate(zip(caches, reuse)):
                    if c > 0:
                        rc.fill(layer, c, k[i, :, width_c - c : width_c], v[i, :, width_c - c : width_c])
                layers.append(PreallocatedLayer(capacity, k, v, length=width_c))
            cache = PreallocatedCache(capacity, layers)
        else:
            cache = PreallocatedCache(capacity)
        logits = self._forward(input_ids, mask, positions, cache)
        next_pos = torch.tensor([c + len(f) for c, f in zip(reuse, fed)], dtype=torch.long)
        return logits, cache, mask, next_pos, [len(f) for f in fed]

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prefixes: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int | Sequence[int],
        *,
        generator: torch.Generator | None = None,
        stop_callback: StopCallback | None = None,
    ) -> tuple[list[Continuation], DecodeStats]:
        """Decode one continuation per prefix until EOS, the row's ``max_new_tokens`` or the callback."""
        result = self.generate_cached(
            prefixes, params, max_new_tokens, generator=generator, stop_callback=stop_callback
        )
        return result.continuations, result.stats

    @torch.inference_mode()
    def generate_cached(
        self,
        prefixes: Sequence[Sequence[int]],
        params: SamplingParams,
        max_new_tokens: int | Sequence[int],
        *,
        caches: Sequence[RowCache | None] | None = None,
        keep_cache: bool = False,
        generator: torch.Generator | None = None,
        stop_callback: StopCallback | None = None,
    ) -> CachedGeneration:
        """``generate`` with KV reuse: ``caches[i]`` (if given) covers a prefix of ``prefixes[i]``; with
        ``keep_cache`` each row that ends by EOS or its cap returns the cache of its full sequence, sharing the
        reused part with ``caches[i]`` (``RowCache.materialize()`` copies it once the old cache is to be dropped)."""
        n = len(prefixes)
        caps = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
        if len(caps) != n:
            raise ValueError(f"max_new_tokens has {len(caps)} entries for {n} prefixes")
        caches = list(caches) if caches is not None else [None] * n
        given = [c is not None for c in caches]
        if self._prompt_cache:  # inside reuse_prompts: a prefix that extends a kept prompt starts from its KV
            caches = [
                c if c is not None else self._prompt_cache.longest_prefix_of(p) for c, p in zip(caches, prefixes)
            ]
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("every prefix needs at least one token")
        conts = [Continuation() for _ in range(n)]
        out_caches: list[RowCache | None] = [None] * n
        encoded = [0] * n
        stats = DecodeStats()
        rows = [i for i in range(n) if caps[i] > 0]
        if not rows:
            return CachedGeneration(conts, stats, out_caches, encoded)
        max_cap = max(caps[i] for i in rows)
        uniforms = None
        if params.temperature > 0:
            uniforms = torch.rand(n, max_cap, generator=generator, dtype=torch.float64).float()

        # Prefill: identical prefixes without a cache are encoded once and repeated.
        sources: dict[Any, int] = {}
        src_prefixes, src_caches, src_of_row = [], [], []
        for i in rows:
            key = tuple(prefixes[i]) if caches[i] is None else ("row", i)
            if key not in sources:
                sources[key] = len(src_prefixes)
                src_prefixes.append(list(prefixes[i]))
                src_caches.append(caches[i])
            src_of_row.append(sources[key])
        logits, cache, mask, next_pos, fed = self._prefill(src_prefixes, src_caches, room=max_cap)
        if self._prompt_cache.active:
            kept_prompt = {s: caches[i] is not None and not given[i] for i, s in zip(rows, src_of_row)}
            for s, (prefix, rc) in enumerate(zip(src_prefixes, src_caches)):
                if rc is None:
                    self._prompt_cache.remember(cache, s, mask[s], prefix)
                elif kept_prompt[s]:  # it extended a kept prompt (a read-out's): kept if it evicts no prompt
                    self._prompt_cache.remember(cache, s, mask[s], prefix, spare_only=True)
        stats.forward_passes += 1
        stats.tokens_encoded += sum(fed)
        seen: set[int] = set()
        reused = [0] * n  # positions of row i's KV taken from caches[i]
        for i, s in zip(rows, src_of_row):
            reused[i] = len(src_prefixes[s]) - fed[s]
            if s not in seen:
                encoded[i] = fed[s]
                seen.add(s)
        index = torch.tensor(src_of_row, dtype=torch.long)
        if len(src_prefixes) != len(rows) or src_of_row != list(range(len(rows))):
            logits = logits[index.to(logits.device)]
            cache.batch_select_indices(index.to(cache.layers[0].keys.device))
            mask = mask[index]
            next_pos = next_pos[index]

        active = torch.tensor(rows, dtype=torch.long)
        eos = torch.tensor(sorted(self.eos_token_ids), dtype=torch.long)
        step = 0
        while True:
            u = uniforms[active, step] if uniforms is not None else None
            token, logp, logq, entropy = sample_step(logits, params, u)
            token = token.cpu()
            stats.tokens_decoded += int(token.numel())
            tok_l, lp_l, lq_l, h_l = token.tolist(), logp.tolist(), logq.tolist(), entropy.tolist()
            is_eos = torch.isin(token, eos).tolist()
            keep_rows: list[int] = []
            for b, row in enumerate(active.tolist()):
                c = conts[row]
                c.token_ids.append(tok_l[b])
                c.logp.append(lp_l[b])
                c.logq.append(lq_l[b])
                c.entropy.append(h_l[b])
                if is_eos[b]:
                    c.finished = True
                elif stop_callback is not None and stop_callback(row, c):
                    c.stopped_early = True
                    continue
                if is_eos[b] or len(c.token_ids) >= caps[row]:
                    if keep_cache:  # only the newly encoded positions are copied; the reused prefix is shared
                        out_caches[row] = row_cache(
                            cache, b, mask[b], list(prefixes[row]) + c.token_ids, caches[row], reused[row]
                        )
                    continue
                keep_rows.append(b)
            if not keep_rows:
                break
            if len(keep_rows) != len(tok_l):
                sel = torch.tensor(keep_rows, dtype=torch.long)
                cache.batch_select_indices(sel.to(cache.layers[0].keys.device))
                active, token, mask, next_pos = active[sel], token[sel], mask[sel], next_pos[sel]
            mask = torch.cat([mask, torch.ones(len(keep_rows), 1, dtype=torch.bool)], dim=1)
            logits = self._forward(token[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + 1
            stats.forward_passes += 1
            step += 1
        return CachedGeneration(conts, stats, out_caches, encoded)

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score(self, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Base log p (temperature 1) of each continuation token given its prefix (one forward per chunk)."""
        out: list[list[float]] = []
        for start in range(0, len(prefixes), self.score_batch_size):
            pre = prefixes[start : start + self.score_batch_size]
            cont = continuations[start : start + self.score_batch_size]
            seqs = [list(p) + list(c) for p, c in zip(pre, cont)]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros(len(seqs), width, dtype=torch.long)
            pos = torch.zeros(len(seqs), width, dtype=torch.long)
            for i, s in enumerate(seqs):
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
                pos[i, width - len(s) :] = torch.arange(len(s))
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), position_ids=pos.to(self.device)
            ).logits
            for i, (p, c) in enumerate(zip(pre, cont)):
                if len(c) == 0:
                    out.append([])
                    continue
                offset = width - len(p) - len(c)
                rows = logits[i, offset + len(p) - 1 : offset + len(p) + len(c) - 1].float()
                lp = (
                    torch.log_softmax(rows, dim=-1)
                    .gather(1, torch.tensor(list(c), device=rows.device)[:, None])
                    .squeeze(1)
                )
                out.append(lp.cpu().tolist())
        return out

    @torch.inference_mode()
    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """Base next-token log-probabilities after each prefix, ``[batch, vocab]`` float32 on CPU. Inside
        ``reuse_prompts()`` a prefix that extends a prompt ``generate`` encoded re-encodes only what follows it."""
        caches = (
            [self._prompt_cache.longest_prefix_of(p) for p in prefixes]
            if self._prompt_cache
            else [None] * len(prefixes)
        )
        logits, _, _, _, fed = self._prefill([list(p) for p in prefixes], caches)
        self.readout_tokens_encoded += sum(fed)
        return torch.log_softmax(logits.float(), dim=-1).cpu()
