"""What fem adds to vLLM's worker (``worker_extension_cls``): methods ``LLM.collective_rpc`` reaches by name, in this
process or in vLLM's own (no pickled callables).

- ``fem_collect_stats``: the statistics tracker's records (``vllm_stats``).
- ``fem_reload_weights``: reload the served model in place from checkpoint weights (vLLM's ``reload_weights``, which
  redoes its post-load weight processing): the merged adapters of ``adapter_mode="merge"``.

Across a process boundary vLLM's serialisation turns a tensor into a nested list, so ``pack_weights`` sends each weight
as ``(name, dtype, shape, raw bytes)`` there and ``unpack_weights`` rebuilds it bit for bit; in process the tensors
are passed as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from fem.generation.vllm_stats import find_tracker

PackedWeight = tuple[str, str, list[int], bytes]


def pack_weights(weights: Iterable[tuple[str, torch.Tensor]], portable: bool) -> list[Any]:
    """``weights`` as ``fem_reload_weights`` takes them: ``(name, tensor)`` in process, ``PackedWeight`` when
    ``portable`` (the engine runs in its own process; pass ``packed=portable`` with them)."""
    if not portable:
        return list(weights)
    return [
        (
            name,
            str(t.dtype).removeprefix("torch."),
            list(t.shape),
            t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes(),
        )
        for name, t in weights
    ]


def unpack_weights(items: Iterable[PackedWeight]) -> Iterator[tuple[str, torch.Tensor]]:
    """The ``(name, tensor)`` pairs ``pack_weights`` packed."""
    for name, dtype, shape, data in items:
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        yield name, raw.view(getattr(torch, dtype)).reshape(shape)


class FemWorkerExtension:
    """Mixed into vLLM's worker: fem's ``collective_rpc`` methods."""

    def fem_collect_stats(self, keys: list[str], release: bool):
        return find_tracker(self).collect(keys, release)

    def fem_reload_weights(self, items: list[Any], packed: bool) -> None:
        """``items``: ``(name, tensor)`` pairs, or ``PackedWeight`` ones when ``packed`` (``pack_weights``)."""
        weights = unpack_weights(items) if packed else items
        self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
