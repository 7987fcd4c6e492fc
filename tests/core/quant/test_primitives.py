from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from qdesk.core.quant.primitives import (
    QuantizedWeight,
    choose_qparams,
    dequantize,
    fake_quantize,
    qrange,
    quantize,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [-1, 32, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_of_dequantized_codes_is_identity(bits, group, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(16, 128)
    scale, zero = choose_qparams(w, bits, group, symmetric)
    q = quantize(w, scale, zero, bits, group)
    lo, hi = qrange(bits)
    assert q.dtype == torch.int8 and int(q.min()) >= lo and int(q.max()) <= hi
    again = quantize(dequantize(q, scale, zero, group), scale, zero, bits, group)
    assert_close(again, q, rtol=0, atol=0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_rounding_error_is_at_most_half_a_step(symmetric):
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    scale, zero = choose_qparams(w, 4, 32, symmetric, scale_dtype=torch.float32)
    step = scale.abs().unsqueeze(-1)
    err = (fake_quantize(w, scale, zero, 4, 32) - w).abs().reshape(8, 2, 32)
    if symmetric:  # the full grid: values beyond +7 steps clip, by at most one step
        x = (w.reshape(8, 2, 32) / scale.unsqueeze(-1))
        inside = x <= 7.5
        assert bool((err[inside] <= (step / 2 + 1e-6).expand_as(err)[inside]).all())
        assert bool((err <= step + 1e-6).all())
    else:
        assert bool((err <= step / 2 + 1e-6).all())


def test_dequantize_matches_compressed_tensors():
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize

    torch.manual_seed(0)
    w = torch.randn(8, 64)
    scale, zero = choose_qparams(w, 4, 32, False)
    q = quantize(w, scale, zero, 4, 32)
    args = QuantizationArgs(num_bits=4, symmetric=False, strategy="group", group_size=32)
    for dtype in (torch.bfloat16, torch.float32):  # they compute in the scale's dtype
        theirs = ct_dequantize(q, scale.to(dtype), zero, args)
        assert_close(dequantize(q, scale, zero, 32, dtype), theirs, rtol=0, atol=0)


def test_scales_are_16_bit_and_bits_are_counted():
    w = torch.randn(4, 64)
    for symmetric, expected in ((True, 4 + 16 / 64), (False, 4 + 20 / 64)):
        scale, zero = choose_qparams(w, 4, 64, symmetric)
        assert scale.dtype == torch.bfloat16
        qw = QuantizedWeight(quantize(w, scale, zero, 4, 64), scale, zero, 4, 64)
        assert qw.storage_bits() / w.numel() == pytest.approx(expected)


def _float_zero_weight(dtype=torch.bfloat16):
    torch.manual_seed(1)
    w = torch.randn(8, 64)
    scale, zero = choose_qparams(w, 4, 32, False, scale_dtype=dtype)
    zero = (zero.float() + 0.375).to(dtype)  # a zero between two integers
    return w, scale, zero, quantize(w, scale, zero, 4, 32)


def test_float_zero_dequantize_matches_compressed_tensors():
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize as ct_dequantize

    _, scale, zero, q = _float_zero_weight()
    qw = QuantizedWeight(q, scale, zero, 4, 32)
    assert qw.float_zero
    args = QuantizationArgs(num_bits=4, symmetric=False, strategy="group", group_size=32,
                            zp_dtype=torch.bfloat16)
    for dtype in (torch.bfloat16, torch.float32):  # they compute step by step in the scale's dtype
        theirs = ct_dequantize(q, scale.to(dtype), zero, args)
        assert_close(qw.dequantize(dtype), theirs, rtol=0, atol=0)
    # in float32 it is the exact value (q - zero) * scale
    exact = (q.double().reshape(8, 2, 32) - zero.double().unsqueeze(-1)) * scale.double().unsqueeze(-1)
    assert_close(qw.dequantize(torch.float32).double(), exact.reshape(8, 64), rtol=0, atol=0)


def test_float_zero_costs_16_bits_per_group():
    w, scale, zero, q = _float_zero_weight()
    qw = QuantizedWeight(q, scale, zero, 4, 32)
    assert qw.storage_bits() / w.numel() == pytest.approx(4 + 32 / 32)
