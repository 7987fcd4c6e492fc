"""GGUF blocks built from qdesk's integer codes: Q4_0, Q5_0 and Q8_0, bit-exact.

ggml's layouts (ggml-common.h), 32 values a block along the input axis, the
scale ``d`` a little-endian float16 at the start of each block::

    Q4_0  18 bytes: d | qs[16]          value = (u - 8) * d,  u in 0..15
    Q5_0  22 bytes: d | qh[4] | qs[16]  value = (u - 16) * d, u in 0..31
    Q8_0  34 bytes: d | q[32] (int8)    value = q * d

In Q4_0 and Q5_0, byte ``j`` of ``qs`` holds element ``j`` in its low nibble and
element ``j + 16`` in its high nibble (not adjacent pairs); Q5_0's fifth bits
sit in ``qh`` read as one little-endian uint32, bit ``j`` for element ``j``.

qdesk's codes map onto them without rounding (``primitives``: value =
(q - zero) * scale with signed codes q):

- symmetric 4-bit (q in -8..7):       u = q + 8          -> Q4_0
- asymmetric 4-bit (integer zero z):  u = q - z + 16     -> Q5_0 (u in 1..31)
- symmetric 8-bit (q in -128..127):   q                  -> Q8_0

A group of 32, 64, 128, ... (or one per row) repeats its scale in every block
it spans. Only the scale's rounding to float16 can change a value, and a
16-bit scale of normal magnitude (bfloat16 has 8 significant bits, float16 11)
survives it exactly; ``half_scales`` says how many did not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32
BLOCK_BYTES = {"Q4_0": 18, "Q5_0": 22, "Q8_0": 34}


@dataclass(frozen=True)
class HalfScales:
    """Per-block float16 scales (rows, in/32) and how exactly they hold the source's."""

    d: np.ndarray  # float16 (rows, in/32)
    inexact: int  # blocks whose float16 scale differs from the source scale
    max_rel_error: float  # largest |d16 - d| / |d| over those blocks


def half_scales(scale: np.ndarray, in_features: int, group_size: int) -> HalfScales:
    """Repeat per-group scales (rows, n_groups) float32 into float16 per-block scales.

    group_size: a multiple of 32, or -1 (one group per row; ``in_features`` a
    multiple of 32). Raises ValueError when a scale overflows float16.
    """
    if in_features % BLOCK:
        raise ValueError(f"{in_features} input features are not whole blocks of {BLOCK}")
    g = in_features if group_size == -1 else group_size
    if g % BLOCK:
        raise ValueError(f"group size {group_size} is not a multiple of {BLOCK}")
    scale = np.asarray(scale, dtype=np.float32)
    per_block = np.repeat(scale, g // BLOCK, axis=1)
    with np.errstate(over="ignore"):
        d = per_block.astype(np.float16)
    if not np.isfinite(d).all():
        raise ValueError(f"a scale of {float(np.abs(per_block).max()):.3g} overflows float16")
    back = d.astype(np.float32)
    off = back != per_block
    rel = 0.0
    if off.any():
        rel = float((np.abs(back - per_block)[off] / np.abs(per_block[off])).max())
    return HalfScales(d, int(off.sum()), rel)


def _blocks(codes: np.ndarray) -> np.ndarray:
    rows, n = codes.shape
    return codes.reshape(rows, n // BLOCK, BLOCK)


def _nibbles(u: np.ndarray) -> np.ndarray:
    """(rows, blocks, 32) values 0..15 -> (rows, blocks, 16): element j low, j+16 high."""
    return (u[..., :16] & 0x0F) | ((u[..., 16:] & 0x0F) << 4)


def _with_scale(d: np.ndarray, payload: list[np.ndarray]) -> np.ndarray:
    rows, nb = d.shape
    head = np.ascontiguousarray(d.astype("<f2")).view(np.uint8).reshape(rows, nb, 2)
    return np.concatenate([head, *payload], axis=-1).reshape(rows, -1)


def pack_q4_0(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Signed symmetric codes q (rows, in) int8 in -8..7, d (rows, in/32) float16
    -> Q4_0 bytes (rows, in/32 * 18) uint8."""
    if q.min(initial=0) < -8 or q.max(initial=0) > 7:
        raise ValueError("Q4_0 holds codes -8..7")
    u = _blocks(q.astype(np.int16) + 8).astype(np.uint8)
    return _with_scale(d, [_nibbles(u)])


def pack_q5_0(u: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Unsigned codes u (rows, in) in 0..31 (value (u - 16) * d) -> Q5_0 bytes
    (rows, in/32 * 22) uint8."""
    if u.min(initial=0) < 0 or u.max(initial=0) > 31:
        raise ValueError("Q5_0 holds codes 0..31")
    u = _blocks(u).astype(np.uint8)
    bits = ((u >> 4) & 1).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
    qh = np.bitwise_or.reduce(bits, axis=-1).astype("<u4")
    qh_bytes = np.ascontiguousarray(qh).view(np.uint8).reshape(*u.shape[:2], 4)
    return _with_scale(d, [qh_bytes, _nibbles(u)])


def pack_q8_0(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Signed codes q (rows, in) int8 -> Q8_0 bytes (rows, in/32 * 34) uint8."""
    qb = np.ascontiguousarray(_blocks(q.astype(np.int8))).view(np.uint8)
    return _with_scale(d, [qb])


def zero_offset_codes(q: np.ndarray, zero: np.ndarray, group_size: int) -> np.ndarray:
    """q - zero + 16 (rows, in) int16 for integer zeros (rows, n_groups): Q5_0's codes."""
    rows, n = q.shape
    g = n if group_size == -1 else group_size
    z = np.repeat(zero.astype(np.int16), g, axis=1)
    return q.astype(np.int16) - z + 16
