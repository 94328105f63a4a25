"""PreallocatedLayer: writes in place, exposes only filled positions, keeps rows, refuses to overflow."""

from __future__ import annotations

import pytest
import torch

from fem.generation.kv_cache import PreallocatedCache, PreallocatedLayer


def test_layer_matches_concatenation_and_keeps_rows():
    layer = PreallocatedLayer(capacity=6)
    chunks = [torch.randn(3, 2, n, 4) for n in (3, 1, 1)]
    for chunk in chunks:
        keys, values = layer.update(chunk, -chunk)
    expected = torch.cat(chunks, dim=2)
    assert torch.equal(keys, expected) and torch.equal(values, -expected)
    assert layer.get_seq_length() == 5 and layer.keys.data_ptr() == keys.data_ptr()  # a view, no copy
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))[0][:, :, :5], expected[[2, 0]])
    with pytest.raises(RuntimeError, match="capacity 6 exceeded"):
        layer.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))


def test_cache_starts_from_given_buffers():
    keys = torch.randn(2, 1, 5, 3)
    cache = PreallocatedCache(5, [PreallocatedLayer(5, keys, keys.clone(), length=2)])
    assert cache.get_seq_length() == 2
    out, _ = cache.update(torch.ones(2, 1, 1, 3), torch.ones(2, 1, 1, 3), 0)
    assert torch.equal(out[:, :, :2], keys[:, :, :2]) and torch.equal(out[:, :, 2], torch.ones(2, 1, 3))
