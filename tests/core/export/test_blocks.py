"""Q4_0 / Q5_0 / Q8_0 blocks from qdesk's codes decode, with gguf-py's own
dequantizer (tested against libggml upstream), to exactly qdesk's weights."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from qdesk.core.export.blocks import half_scales, pack_q4_0, pack_q5_0, pack_q8_0
from qdesk.core.export.exact import encode, exact_type
from qdesk.core.quant.primitives import dequantize

T = gguf.GGMLQuantizationType


def _codes(rng, shape, lo, hi):
    q = rng.integers(lo, hi + 1, size=shape).astype(np.int8)
    q[0, :4] = [lo, hi, lo, hi]  # the extremes of the grid are always present
    return q


def _scales(rng, rows, groups):
    # bfloat16 scales of weight magnitude, as qdesk stores them
    s = torch.from_numpy(rng.uniform(1e-3, 5e-2, size=(rows, groups)).astype(np.float32))
    return s.to(torch.bfloat16).float().numpy()


@pytest.mark.parametrize("group", [32, 64, 128, -1])
@pytest.mark.parametrize("lo,hi", [(-8, 7), (-7, 7)])  # all 16 levels, and the symmetric max/7 grid
def test_q4_0_decodes_to_the_codes_times_scales(group, lo, hi):
    rng = np.random.default_rng(abs(group) * 100 - lo)
    q = _codes(rng, (6, 256), lo, hi)
    s = _scales(rng, 6, 1 if group == -1 else 256 // group)
    blocks, hs = encode(q, s, None, group, "Q4_0")
    assert blocks.shape == (6, 256 // 32 * 18) and hs.inexact == 0
    want = dequantize(torch.from_numpy(q), torch.from_numpy(s), None, group).numpy()
    got = gguf.quants.dequantize(blocks, T.Q4_0)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("group", [32, 64, -1])
def test_q5_0_holds_asymmetric_4_bit_exactly(group):
    rng = np.random.default_rng(3)
    q = _codes(rng, (5, 128), -8, 7)
    n_groups = 1 if group == -1 else 128 // group
    zero = rng.integers(-8, 8, size=(5, n_groups)).astype(np.int8)
    zero[0, 0], zero[1, 0] = -8, 7  # q - z reaches both -15 and 15
    s = _scales(rng, 5, n_groups)
    blocks, _ = encode(q, s, zero, group, "Q5_0")
    want = dequantize(torch.from_numpy(q), torch.from_numpy(s), torch.from_numpy(zero), group).numpy()
    got = gguf.quants.dequantize(blocks, T.Q5_0)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("lo", [-128, -127])
def test_q8_0_holds_8_bit_codes(lo):
    rng = np.random.default_rng(4)
    q = _codes(rng, (4, 96), lo, 127)
    s = _scales(rng, 4, 3)
    blocks, _ = encode(q, s, None, 32, "Q8_0")
    want = dequantize(torch.from_numpy(q), torch.from_numpy(s), None, 32).numpy()
    assert np.array_equal(gguf.quants.dequantize(blocks, T.Q8_0), want)


def test_nibble_layout_is_j_and_j_plus_16():
    q = np.arange(-8, 8, dtype=np.int8).repeat(2).reshape(1, 32)  # element j = q[j]
    d = np.ones((1, 1), dtype=np.float16)
    b = pack_q4_0(q, d)[0]
    assert b[:2].view("<f2")[0] == 1.0
    u = q[0].astype(int) + 8
    assert list(b[2:]) == [u[j] | (u[j + 16] << 4) for j in range(16)]


def test_q5_0_high_bits_are_one_little_endian_word():
    u = np.zeros((1, 32), dtype=np.int16)
    u[0, 0], u[0, 31] = 16, 31  # bit 4 set for elements 0 and 31
    b = pack_q5_0(u, np.ones((1, 1), dtype=np.float16))[0]
    assert int(b[2:6].view("<u4")[0]) == (1 << 0) | (1 << 31)


def test_out_of_range_codes_are_refused():
    d = np.ones((1, 1), dtype=np.float16)
    with pytest.raises(ValueError):
        pack_q4_0(np.full((1, 32), 8, dtype=np.int8), d)
    with pytest.raises(ValueError):
        pack_q5_0(np.full((1, 32), 32, dtype=np.int16), d)
    assert pack_q8_0(np.zeros((1, 32), dtype=np.int8), d).shape == (1, 34)


def test_half_scales_counts_what_float16_rounds():
    bf16 = torch.tensor([[0.25, 3e-3]]).bfloat16().float().numpy()  # 8 significant bits
    exact = half_scales(bf16, 64, 32)
    assert exact.inexact == 0 and exact.d.dtype == np.float16
    assert half_scales(np.array([[3e-3]], dtype=np.float32), 32, 32).inexact == 1  # 24 bits
    # 1e-6 is below float16's normal range: its subnormal loses digits
    tiny = half_scales(np.array([[1.2345e-6, 0.5]], dtype=np.float32), 64, 32)
    assert tiny.inexact == 1 and 0 < tiny.max_rel_error < 0.05
    with pytest.raises(ValueError, match="overflows"):
        half_scales(np.array([[1e6]], dtype=np.float32), 32, 32)


@pytest.mark.parametrize("bits,group,sym,float_zero,width,widen,want", [
    (4, 32, True, False, 64, False, "Q4_0"),
    (4, 128, True, False, 256, False, "Q4_0"),
    (4, -1, True, False, 64, False, "Q4_0"),
    (4, 64, False, False, 64, False, "Q5_0"),
    (8, 64, True, False, 64, False, "Q8_0"),
    (3, 32, True, False, 64, True, "Q4_0"),
    (2, 32, False, False, 64, True, "Q5_0"),
])
def test_exact_types(bits, group, sym, float_zero, width, widen, want):
    choice = exact_type(bits, group, sym, float_zero, width, widen)
    assert choice.name == want and choice.widened == (bits < 4)


@pytest.mark.parametrize("bits,group,sym,float_zero,width,words", [
    (4, 64, False, True, 64, ["float", "Q4_1"]),         # HQQ's float zero
    (4, 16, True, False, 64, ["blocks of 32", "Q4_K_M"]),  # groups under 32
    (4, -1, True, False, 48, ["rows", "blocks of 32"]),    # rows not whole blocks
    (8, 32, False, False, 64, ["-255", "Q8_0"]),           # 8-bit with a zero point
    (3, 32, True, False, 64, ["3-bit", "--widen", "Q3_K_M"]),
    (2, 32, True, False, 64, ["2-bit", "Q2_K"]),
])
def test_no_exact_type_says_why_and_the_nearest(bits, group, sym, float_zero, width, words):
    choice = exact_type(bits, group, sym, float_zero, width)
    assert choice.name is None
    assert all(w in choice.reason for w in words), choice.reason
