"""KV storage of ``HFBackend``: the batch cache of one decode, and the rows it keeps beyond a call.

- ``PreallocatedCache``: a transformers KV cache whose per-layer storage is allocated once for the whole decode.
  transformers' ``DynamicLayer`` grows by ``torch.cat`` at every step: it copies the whole cache each time and
  leaves a trail of freed buffers in the allocator (which held power_mh's resident memory up). ``PreallocatedLayer``
  writes new positions in place into a buffer of ``capacity`` positions and hands the attention a view of the filled
  part. ``HFBackend`` sizes it for the longest row of a call (prefix + ``max_new_tokens``): the width a growing cache
  reaches as soon as one row runs to its cap.
- ``RowCache``: the KV of one row copied out of a batch cache (``row_cache``), kept to decode again from it.
- ``PromptCache``: the prompts' rows kept inside ``HFBackend.reuse_prompts()`` (bounded LRU).
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in ``[batch, heads, capacity, dim]`` buffers; ``length`` positions are filled."""

    def __init__(
        self,
        capacity: int,
        keys: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        length: int = 0,
    ):
        super().__init__()
        self.capacity = int(capacity)
        self.length = 0
        if keys is not None:
            if keys.shape[2] != self.capacity or not 0 <= length <= self.capacity:
                raise ValueError(f"buffers of {keys.shape[2]} positions for capacity {capacity}, length {length}")
            self.device = keys.device
            self.keys, self.values, self.length = keys, values, int(length)
            self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, _ = key_states.shape
        self.device = key_states.device
        self.keys = key_states.new_empty(batch, heads, self.capacity, key_states.shape[-1])
        self.values = value_states.new_empty(batch, heads, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the filled ones; return views of everything filled so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} positions)")
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices``, at the same capacity; only the filled positions are copied (the rest of a
        fresh buffer is never touched, so on CPU its pages are not even resident)."""
        if not self.is_initialized:
            return
        keys = self.keys.new_empty(len(indices), *self.keys.shape[1:])
        values = self.values.new_empty(len(indices), *self.values.shape[1:])
        keys[:, :, : self.length] = self.keys[:, :, : self.length].index_select(0, indices)
        values[:, :, : self.length] = self.values[:, :, : self.length].index_select(0, indices)
        self.keys, self.values = keys, values


class PreallocatedCache(DynamicCache):
    """A ``DynamicCache`` of ``PreallocatedLayer``: given ``layers``, or created on first use with ``capacity``."""

    def __init__(self, capacity: int, layers: list[PreallocatedLayer] | None = None):
        Cache.__init__(
            self,
            layers=layers,
            layer_class_to_replicate=None if layers else functools.partial(PreallocatedLayer, capacity),
        )


@dataclass
class RowCache:
    """KV states of the first ``length`` tokens of ``token_ids`` for one row.

    The first ``base_length`` tokens live in ``base`` (shared with the cache this row was decoded from, not
    copied); the rest in ``keys``/``values`` (per layer ``[heads, n, dim]``). ``materialize()`` makes one
    self-contained copy, after which the base can be freed.
    """

    token_ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    base: RowCache | None = None
    base_length: int = 0

    @property
    def length(self) -> int:
        return self.base_length + (int(self.keys[0].shape[1]) if self.keys else 0)

    def fill(self, layer: int, n: int, keys_out: torch.Tensor, values_out: torch.Tensor) -> None:
        """Write the first ``n`` tokens' keys and values of ``layer`` into ``[heads, n, dim]`` tensors."""
        shared = min(n, self.base_length)
        if shared:
            self.base.fill(layer, shared, keys_out[:, :shared], values_out[:, :shared])
        if n > shared:
            keys_out[:, shared:n] = self.keys[layer][:, : n - shared]
            values_out[:, shared:n] = self.values[layer][:, : n - shared]

    def materialize(self) -> RowCache:
        """This cache as one segment per layer (a copy when it shares a base; itself otherwise)."""
        if self.base is None:
            return self
        keys, values = [], []
        for layer, (k_own, v_own) in enumerate(zip(self.keys, self.values)):
            k = k_own.new_empty(k_own.shape[0], self.length, k_own.shape[2])
            v = v_own.new_empty(v_own.shape[0], self.length, v_own.shape[2])
            self.fill(layer, self.length, k, v)
            keys.append(k)
            values.append(v)
        return RowCache(token_ids=self.token_ids, keys=keys, values=values)


def row_cache(
    cache: PreallocatedCache,
    row: int,
    mask_row: torch.Tensor,
    token_ids: list[int],
    base: RowCache | None = None,
    base_length: int = 0,
) -> RowCache:
    """Copy one batch row's KV out of ``cache``; the first ``base_length`` positions stay shared with ``base``."""
    cols = mask_row.nonzero().squeeze(1)[base_length:].to(cache.layers[0].keys.device)
    keys = [layer.keys[row].index_select(1, cols) for layer in cache.layers]
    values = [layer.values[row].index_select(1, cols) for layer in cache.layers]
    if not base_length:
        base = None
    return RowCache(token_ids=token_ids, keys=keys, values=values, base=base, base_length=base_length)


class PromptCache:
    """The rows of prompts kept while a ``session()`` is open (LRU, at most ``max_tokens`` tokens in all), emptied
    when the outermost session closes: the weights may change between sessions (a new adapter, an M-step).
    Iterates over the kept prompts, least recently used first."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self._rows: OrderedDict[tuple[int, ...], RowCache] = OrderedDict()
        self._depth = 0

    @property
    def active(self) -> bool:
        return self._depth > 0

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self._rows)

    def remember(
        self, cache: PreallocatedCache, row: int, mask_row: torch.Tensor, prompt: list[int], spare_only: bool = False
    ) -> None:
        """Keep batch row ``row`` of ``cache`` as the KV of ``prompt`` (evicting the least recently used; with
        ``spare_only`` only when it fits without evicting anything)."""
        key = tuple(prompt)
        if key in self._rows:
            self._rows.move_to_end(key)
            return
        held = sum(len(k) for k in self._rows)
        if len(key) > self.max_tokens or (spare_only and held + len(key) > self.max_tokens):
            return
        self._rows[key] = row_cache(cache, row, mask_row, prompt)
        held += len(key)
        while held > self.max_tokens:
            oldest, _ = self._rows.popitem(last=False)
            held -= len(oldest)

    def longest_prefix_of(self, prefix: Sequence[int]) -> RowCache | None:
        """The longest kept prompt that is a proper prefix of ``prefix``."""
        best: tuple[int, ...] | None = None
        for key in self._rows:
            if len(key) < len(prefix) and (best is None or len(key) > len(best)) and tuple(prefix[: len(key)]) == key:
                best = key
        if best is None:
            return None
        self._rows.move_to_end(best)
        return self._rows[best]
