"""The byte layout of torch's CPU int4 weights (``_convert_weight_to_int4pack_for_cpu``).

torch packs an (N, K) matrix of 4-bit values u in [0, 15] into uint8 (N, K/2),
in blocks of ``block`` output rows; inside a block the bytes run over k, and
for each k hold the block's rows two per byte. Which two depends on the CPU
kernel torch dispatches to (ATen/native/cpu/int4mm_kernel.cpp):

    "halves" (AVX512: block 64, AVX2: block 32), for byte p of a k-row:
        byte[k, p] = u[p, k] | u[p + block/2, k] << 4       p < block/2
    "pairs" (the portable kernel):
        byte[k, p] = u[2p, k] | u[2p + 1, k] << 4

    storage: (N / block, K, block / 2) bytes, i.e. (N, K/2) as torch reports it.

A block shorter than ``block`` (N not a multiple) is packed in pairs; qdesk pads
N to whole blocks instead, so one rule holds for every row. The layout is
found by packing a probe with torch's own op and comparing (``native_layout``),
never assumed: a torch that packs differently gets no layout, and then qdesk
lets torch pack and never unpacks itself.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Int4Layout:
    block: int  # output rows per block
    pairing: str  # "halves" or "pairs"

    def pack(self, u: torch.Tensor) -> torch.Tensor:
        """uint8 values in [0, 15], (N, K) with N % block == 0 and K even -> uint8 (N, K/2)."""
        n, k = u.shape
        if n % self.block or k % 2:
            raise ValueError(f"cannot pack ({n}, {k}) in blocks of {self.block}")
        t = u.to(torch.uint8).reshape(n // self.block, self.block, k)
        if self.pairing == "halves":
            lo, hi = t[:, : self.block // 2], t[:, self.block // 2 :]
        else:
            lo, hi = t[:, 0::2], t[:, 1::2]
        packed = lo | (hi << 4)  # (blocks, block/2, K)
        return packed.transpose(1, 2).contiguous().reshape(n, k // 2)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """The inverse of ``pack``: uint8 (N, K/2) -> uint8 values (N, K)."""
        n, half = packed.shape
        return self.unpack_blocked(packed).transpose(1, 2).reshape(n, 2 * half)

    def unpack_blocked(self, packed: torch.Tensor) -> torch.Tensor:
        """uint8 (N, K/2) -> values (N / block, K, block), rows in order inside a
        block: the order the bytes come in, so no transpose is needed."""
        n, half = packed.shape
        t = packed.reshape(n // self.block, 2 * half, self.block // 2)
        lo, hi = t & 0xF, t >> 4
        if self.pairing == "halves":
            return torch.cat([lo, hi], dim=-1)
        return torch.stack([lo, hi], dim=-1).reshape(n // self.block, 2 * half, self.block)


    def unpack_blocked_into(self, packed: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``unpack_blocked`` written into ``out`` (blocks, K, block), any dtype."""
        n, half = packed.shape
        t = packed.reshape(n // self.block, 2 * half, self.block // 2)
        if self.pairing == "halves":
            lo, hi = out[..., : self.block // 2], out[..., self.block // 2 :]
        else:
            lo, hi = out[..., 0::2], out[..., 1::2]
        lo.copy_(t & 0xF)
        hi.copy_(t >> 4)
        return out


CANDIDATES = (Int4Layout(64, "halves"), Int4Layout(32, "halves"), Int4Layout(32, "pairs"),
              Int4Layout(64, "pairs"), Int4Layout(16, "pairs"))


def torch_pack(u: torch.Tensor) -> torch.Tensor:
    """torch's own packing of uint8/int values in [0, 15], (N, K) -> uint8 (N, K/2)."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.to(torch.int32).contiguous(), 1)


def int4_op_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
    )


@functools.cache
def native_layout() -> Int4Layout | None:
    """The layout this torch packs in on this CPU, or None if none of the known ones."""
    if not int4_op_available():
        return None
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 16, (128, 64), generator=g, dtype=torch.int32)
    try:
        native = torch_pack(u)
    except RuntimeError:
        return None
    for layout in CANDIDATES:
        if native.shape == (128, 32) and torch.equal(layout.pack(u), native):
            return layout
    return None


def row_multiple() -> int:
    """Pad N to a multiple of this: whole blocks of the known layout (torch's op
    itself needs N % 16 == 0)."""
    layout = native_layout()
    return layout.block if layout is not None else 16
