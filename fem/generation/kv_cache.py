"""A transformers KV cache whose per-layer storage is allocated once for the whole decode.

transformers' ``DynamicLayer`` grows by ``torch.cat`` at every step: it copies the whole cache each time and leaves
a trail of freed buffers in the allocator (which held power_mh's resident memory up). ``PreallocatedLayer`` writes
new positions in place into a buffer of ``capacity`` positions and hands the attention a view of the filled part.
``HFBackend`` sizes it for the longest row of a call (prefix + ``max_new_tokens``): the width a growing cache reaches
as soon as one row runs to its cap.
"""

from __future__ import annotations

import functools

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
