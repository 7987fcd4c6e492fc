"""Dense int32 bit-packing of b-bit codes, the layout of compressed-tensors'
``pack-quantized`` format.

Each row is a bit stream: element ``i`` occupies bits ``[i*b, (i+1)*b)`` counted
from the least significant bit of word 0; values are stored unsigned (code +
2^(b-1)); a value may straddle two words; the row is padded with zeros to whole
words::

    bits=3, one row:  word0 = e0 | e1<<3 | ... | e9<<27 | (e10 & 0b11)<<30
                      word1 = e10>>2 | e11<<1 | ...

``packed_dim=0`` packs along columns instead (used for zero points).
"""

from __future__ import annotations

import math

import torch

_MASK32 = (1 << 32) - 1


def packed_words(n: int, bits: int) -> int:
    return math.ceil(n * bits / 32)


def pack_int32(q: torch.Tensor, bits: int, packed_dim: int = 1) -> torch.Tensor:
    """int8 codes (rows, cols) -> int32 (rows, ceil(cols*bits/32)) (or along dim 0)."""
    if q.dtype != torch.int8 or q.ndim != 2:
        raise ValueError(f"pack_int32 wants a 2-D int8 tensor, got {q.dtype} {tuple(q.shape)}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    if packed_dim == 0:
        return pack_int32(q.t().contiguous(), bits).t().contiguous()
    rows, cols = q.shape
    u = q.to(torch.int64) + (1 << (bits - 1))
    words = packed_words(cols, bits)
    pos = torch.arange(cols, device=q.device, dtype=torch.int64) * bits
    word, shift = pos // 32, pos % 32
    # int64 accumulators: a value shifted by up to 31 bits fits, the spill is cut later.
    acc = torch.zeros(rows, words + 1, dtype=torch.int64, device=q.device)
    acc.index_add_(1, word, u << shift)
    spill = (shift + bits) > 32
    if bool(spill.any()):
        acc.index_add_(1, word[spill] + 1, u[:, spill] >> (32 - shift[spill]))
    low = acc[:, :words] & _MASK32
    return (low - ((low >> 31) << 32)).to(torch.int32)  # two's complement wrap


def unpack_int32(packed: torch.Tensor, bits: int, n: int, packed_dim: int = 1) -> torch.Tensor:
    """The inverse of ``pack_int32``: ``n`` codes per row (or per column)."""
    if packed.dtype != torch.int32 or packed.ndim != 2:
        raise ValueError(f"unpack_int32 wants a 2-D int32 tensor, got {packed.dtype}")
    if packed_dim == 0:
        return unpack_int32(packed.t().contiguous(), bits, n).t().contiguous()
    rows, words = packed.shape
    if words != packed_words(n, bits):
        raise ValueError(f"{words} words cannot hold exactly {n} values of {bits} bits")
    w = packed.to(torch.int64) & _MASK32
    w = torch.cat([w, torch.zeros(rows, 1, dtype=torch.int64, device=w.device)], dim=1)
    pos = torch.arange(n, device=packed.device, dtype=torch.int64) * bits
    word, shift = pos // 32, pos % 32
    both = w[:, word] | (w[:, word + 1] << 32)
    u = (both >> shift) & ((1 << bits) - 1)
    return (u - (1 << (bits - 1))).to(torch.int8)
