"""Pack/unpack: bit-exact round trips at every width, and the exact layout of
compressed-tensors (checked against its own packer)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from qdesk.core.quant.packing import pack_int32, packed_words, unpack_int32

SHAPES = [(1, 1), (3, 7), (5, 32), (4, 33), (6, 100), (2, 576)]


def _codes(shape, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(torch.int8)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dim", [0, 1])
def test_round_trip_is_bit_exact(bits, shape, dim):
    q = _codes(shape, bits)
    packed = pack_int32(q, bits, dim)
    assert packed.dtype == torch.int32
    assert packed.shape[dim] == packed_words(shape[dim], bits)
    assert_close(unpack_int32(packed, bits, shape[dim], dim), q, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dim", [0, 1])
def test_layout_equals_compressed_tensors(bits, shape, dim):
    from compressed_tensors.compressors.pack_quantized.helpers import (
        pack_to_int32,
        unpack_from_int32,
    )

    q = _codes(shape, bits, seed=1)
    ours = pack_int32(q, bits, dim)
    assert_close(ours, pack_to_int32(q, bits, dim), rtol=0, atol=0)
    assert_close(unpack_from_int32(ours, bits, torch.Size(shape), dim), q, rtol=0, atol=0)


def test_extremes_of_the_range_survive():
    for bits in range(1, 9):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        q = torch.tensor([[lo, hi] * 40], dtype=torch.int8)
        assert_close(unpack_int32(pack_int32(q, bits), bits, 80), q, rtol=0, atol=0)


def test_misuse_is_refused():
    with pytest.raises(ValueError):
        pack_int32(torch.zeros(2, 2, dtype=torch.int32), 4)
    with pytest.raises(ValueError):
        pack_int32(torch.zeros(2, 2, dtype=torch.int8), 9)
    with pytest.raises(ValueError):
        unpack_int32(torch.zeros(2, 3, dtype=torch.int32), 4, 8)
