"""Which GGUF type holds a qdesk-quantized weight exactly, and its bytes.

Exact means llama.cpp computes with the very weights qdesk computed with; only
a float16 rounding of a scale can differ (``blocks.half_scales`` counts those).
Where no type is exact the answer says why and names the nearest choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdesk.core.export.blocks import (
    BLOCK,
    HalfScales,
    half_scales,
    pack_q4_0,
    pack_q5_0,
    pack_q8_0,
    zero_offset_codes,
)

EXACT_TYPES = ("Q4_0", "Q5_0", "Q8_0")


@dataclass(frozen=True)
class ExactType:
    """``name``: the exact GGUF type, or None with ``reason`` (why, and the
    nearest choice). ``widened``: 3- or 2-bit codes held in a 4-bit type."""

    name: str | None
    reason: str = ""
    widened: bool = False


def exact_type(bits: int, group_size: int, symmetric: bool, float_zero: bool,
               in_features: int, widen: bool = False) -> ExactType:
    """The exact GGUF type of one quantized Linear's format (see ``blocks``)."""
    if float_zero:
        return ExactType(None, "its zero point is a float (HQQ's): no GGUF type holds "
                         "(q - z) * s exactly (Q4_1's minimum -z*s would be rounded to "
                         "float16); the nearest is Q4_1 or Q5_K_M (--type Q4_1 "
                         "--allow-requantize re-quantizes the dequantized weights)")
    g = in_features if group_size == -1 else group_size
    if in_features % BLOCK or g % BLOCK:
        what = "its rows" if in_features % BLOCK else f"its groups of {g}"
        return ExactType(None, f"{what} do not fill ggml's blocks of {BLOCK} values: no "
                         "exact GGUF type; the nearest is Q4_K_M (--type Q4_K_M "
                         "--allow-requantize)")
    if bits == 8:
        if symmetric:
            return ExactType("Q8_0")
        return ExactType(None, "8-bit codes with a zero point span -255..255 after "
                         "subtracting it, wider than Q8_0's int8: no exact type; the "
                         "nearest is Q8_0 (--type Q8_0 --allow-requantize)")
    if bits == 4:
        return ExactType("Q4_0" if symmetric else "Q5_0")
    if bits in (3, 2):
        if widen:
            return ExactType("Q4_0" if symmetric else "Q5_0", widened=True)
        wide = "Q4_0 (4.5" if symmetric else "Q5_0 (5.5"
        near = "Q3_K_M" if bits == 3 else "Q2_K"
        return ExactType(None, f"no GGUF type holds {bits}-bit codes at their size (the "
                         f"K-quants' 6-bit sub-block scales cannot hold qdesk's 16-bit "
                         f"ones); --widen stores them exactly in {wide} bits per weight), "
                         f"or --type {near} --allow-requantize re-quantizes to the "
                         "nearest size")
    return ExactType(None, f"{bits}-bit codes have no GGUF type")


def encode(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, group_size: int,
           gguf_type: str) -> tuple[np.ndarray, HalfScales]:
    """The blocks of one weight: codes q (rows, in) int8, scale (rows, n_groups)
    float32, zero (rows, n_groups) int8 or None -> (rows, bytes per row) uint8."""
    rows, n = q.shape
    hs = half_scales(scale, n, group_size)
    if gguf_type == "Q4_0":
        if zero is not None:
            raise ValueError("Q4_0 holds symmetric codes only")
        return pack_q4_0(q, hs.d), hs
    if gguf_type == "Q8_0":
        if zero is not None:
            raise ValueError("Q8_0 holds symmetric codes only")
        return pack_q8_0(q, hs.d), hs
    if gguf_type == "Q5_0":
        if zero is None:
            # symmetric codes in Q5_0: zero 0 (used for a mixed tensor's rows)
            zero = np.zeros(scale.shape, dtype=np.int8)
        return pack_q5_0(zero_offset_codes(q, zero, group_size), hs.d), hs
    raise ValueError(f"{gguf_type} is not an exact type ({', '.join(EXACT_TYPES)})")
