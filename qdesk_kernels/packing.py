"""The GPU layout of weight-only quantized Linears, and its torch reference.

A Linear's codes q (signed, N outputs x K inputs) are stored unsigned in
``sbits``-bit fields (2, 4 or 8 bits; 3-bit codes use 4-bit fields), ``per =
32 / sbits`` consecutive input positions to one int32 word, transposed so that
the output dimension is contiguous::

    words (K / per, N) int32, N contiguous
    words[w, n] = sum_{j < per} (q[n, w*per + j] + 2^(sbits-1)) << (j * sbits)

    scales (K / group, N) 16-bit, zeros (K / group, N) float32 or absent

A warp reading a tile of words reads consecutive n: each thread's four int32
are one 16-byte load. The kernels read each group's scale and zero once: they
accumulate x . q over the group in float32 and scale the group's sum,

    y[m, n] = sum_g s[g, n] * (sum_{k in g} x[m, k] q[n, k]  -  z[g, n] sum_{k in g} x[m, k])

which is exactly x W^T for W = (q - z) s: q is an integer (exact in bf16/fp16
and float32), z an integer or a 16-bit float (exact in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STORAGE_BITS = {2: 2, 3: 4, 4: 4, 8: 8}  # code bits -> field bits


@dataclass(frozen=True)
class PackedWeight:
    """One Linear's codes in the GPU layout (see the module docstring)."""

    words: torch.Tensor  # int32 (K / per, N)
    scales: torch.Tensor  # 16-bit (K / group, N)
    zeros: torch.Tensor | None  # float32 (K / group, N), or None (symmetric)
    bits: int  # code bits (2, 3, 4, 8)
    group: int  # input columns per scale; K for per-channel
    out_features: int
    in_features: int

    @property
    def sbits(self) -> int:
        return STORAGE_BITS[self.bits]

    @property
    def per_word(self) -> int:
        return 32 // self.sbits

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.words, self.scales, self.zeros)
                   if t is not None)


def pack_weight(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int,
                group: int) -> PackedWeight:
    """q int8 (N, K) signed codes; scale (N, K/group) 16-bit; zero (N, K/group) integer
    or float, or None; group -1 = per channel."""
    if bits not in STORAGE_BITS:
        raise ValueError(f"the GPU kernels take 2, 3, 4 or 8-bit codes, not {bits}")
    n, k = q.shape
    group = k if group == -1 else group
    sbits = STORAGE_BITS[bits]
    per = 32 // sbits
    if k % per or k % group:
        raise ValueError(f"width {k} must be a multiple of {per} and of the group {group}")
    u = (q.to(torch.int64) + (1 << (sbits - 1))).t().reshape(k // per, per, n)
    shifts = (torch.arange(per, device=q.device, dtype=torch.int64) * sbits).view(1, per, 1)
    words = (u << shifts).sum(dim=1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).contiguous()
    zeros = None if zero is None else zero.to(torch.float32).t().contiguous()
    return PackedWeight(words, scale.t().contiguous(), zeros, bits, group, n, k)


def unpack_codes(w: PackedWeight) -> torch.Tensor:
    """The signed codes, int8 (N, K): the inverse of ``pack_weight``."""
    per, sbits = w.per_word, w.sbits
    words = w.words.to(torch.int64) & 0xFFFFFFFF  # (K / per, N)
    shifts = (torch.arange(per, device=words.device, dtype=torch.int64) * sbits).view(1, per, 1)
    u = (words.unsqueeze(1) >> shifts) & ((1 << sbits) - 1)  # (K / per, per, N)
    return (u.reshape(w.in_features, w.out_features) - (1 << (sbits - 1))).t().to(torch.int8)


def dequantize(w: PackedWeight, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """W (N, K) = (q - z) s, formed in float64 (exact), rounded once to ``dtype``."""
    q = unpack_codes(w).to(torch.float64).reshape(w.out_features, -1, w.group)
    s = w.scales.t().to(torch.float64).unsqueeze(-1)
    if w.zeros is not None:
        q = q - w.zeros.t().to(torch.float64).unsqueeze(-1)
    return (q * s).reshape(w.out_features, w.in_features).to(dtype)


def linear_reference(x: torch.Tensor, w: PackedWeight) -> torch.Tensor:
    """The kernels' torch reference: x (M, K) @ W^T in float64, returned in x's dtype."""
    return (x.to(torch.float64) @ dequantize(w).t()).to(x.dtype)
