"""QuantLinear against dequantize-then-matmul, over shapes x bits x group sizes x
symmetric/asymmetric, each kernel: exact weights (float64 reference), output
within the activation dtype's rounding."""

from __future__ import annotations

import pytest
import torch
from packed_helpers import random_weight
from torch.testing import assert_close

from qdesk.core.packed import NotExact, QuantLinear, native
from qdesk.core.packed.cpu_kernels import DENSE_FROM_ROWS

SHAPES = [(64, 256), (100, 576), (192, 96)]  # (out, in); 100 rows: padded to whole blocks
GROUPS = [-1, 32, 64, 96, 16]  # 96: a multiple of 32 the op does not take itself; 16: too small


def _reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64) @ w.t()


def _bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """|x| |W|^T: the scale of each output's rounding error."""
    return x.abs().to(torch.float64) @ w.abs().t()


def _check(y, x, w, rel):
    ref = _reference(x, w)
    err = (y.to(torch.float64) - ref).abs()
    worst = float((err / (_bound(x, w) + 1e-30)).max())
    assert worst <= rel, f"error {worst:.2e} of |x||W| exceeds {rel:.0e}"


def _kernels_for(qw):
    out = ["dense", "int4"]
    if native.library() is not None:
        out.append("native")
    if qw.group_size in (-1, qw.q.shape[1]) and qw.q.shape[1] % 32 == 0:
        out.append("int8")
    return out


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_kernel_multiplies_with_the_exact_weight(n, k, bits, group, symmetric):
    if group != -1 and k % group:
        pytest.skip("group does not divide the width")
    qw = random_weight(n, k, bits, group, symmetric, seed=n + bits + max(group, 0))
    exact = qw.dequantize(torch.float64)
    x = torch.randn(3, k, generator=torch.Generator().manual_seed(k))
    for kernel in _kernels_for(qw):
        try:
            layer = QuantLinear(qw, dtype=torch.float32, kernel=kernel)
        except NotExact:
            # torch's int4 op: no group under 32; qdesk's: widths of 16s, integer zeros
            assert (kernel == "int4" and group == 16) or (kernel == "native" and k % 16)
            continue
        # the weight it holds is the checkpoint's, bit for bit
        assert_close(layer.dequantize(torch.float64), exact, rtol=0, atol=0)
        # float32 activations: the op's float32 arithmetic (torch's scalar path)
        _check(layer(x), x, exact, 1e-6)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group", [-1, 32, 96])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("rows", [1, 3, DENSE_FROM_ROWS])
def test_bfloat16_activations_round_like_a_bfloat16_matmul(bits, group, symmetric, rows):
    qw = random_weight(100, 192, bits, group, symmetric, seed=bits)
    exact = qw.dequantize(torch.float64)
    layer = QuantLinear(qw, dtype=torch.bfloat16)
    # this CPU has a fast kernel for every one of these: torch's ops or qdesk's
    assert layer.kernel in ("int4", "int8", "native")
    x = torch.randn(rows, 192, generator=torch.Generator().manual_seed(rows)).to(torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and y.shape == (rows, 100)
    # two roundings to bfloat16 at most (the op's output, the zero-point term), 2^-8 each
    _check(y, x, exact, 2 * 2**-8)
    dense = torch.nn.functional.linear(x, exact.to(torch.bfloat16))
    _check(dense, x, exact, 2 * 2**-8)  # the bound a dense bf16 matmul meets too


def test_float_zero_points_are_exact():
    qw = random_weight(64, 128, 4, 32, False, float_zero=True)
    assert qw.float_zero and not torch.equal(qw.zero.float(), qw.zero.float().round())
    exact = qw.dequantize(torch.float64)
    x = torch.randn(2, 128)
    layer = QuantLinear(qw, dtype=torch.float32, kernel="int4")
    assert_close(layer.dequantize(torch.float64), exact, rtol=0, atol=0)
    _check(layer(x), x, exact, 1e-6)
    _check(QuantLinear(qw, dtype=torch.bfloat16)(x.to(torch.bfloat16)), x.to(torch.bfloat16),
           exact, 2 * 2**-8)


def test_a_scale_the_activation_dtype_cannot_hold_falls_back_and_says_why():
    qw = random_weight(64, 128, 4, 32, True, scale_dtype=torch.float16)
    assert not torch.equal(qw.scale.to(torch.bfloat16).float(), qw.scale.float())
    with pytest.raises(NotExact, match="not exact in torch.bfloat16"):
        QuantLinear(qw, dtype=torch.bfloat16, kernel="int4")
    layer = QuantLinear(qw, dtype=torch.bfloat16)
    if native.library() is not None:  # qdesk's kernel reads float16 scales as they are
        assert layer.kernel == "native"
    else:
        assert layer.kernel == "dense"
        assert any("not exact in torch.bfloat16" in r for r in layer.skipped)


def test_bias_and_leading_dimensions():
    qw = random_weight(64, 128, 4, 64, False)
    bias = torch.randn(64)
    layer = QuantLinear(qw, bias, dtype=torch.float32, kernel="int4")
    x = torch.randn(2, 5, 128)
    y = layer(x)
    assert y.shape == (2, 5, 64)
    _check(y.reshape(-1, 64) - bias, x.reshape(-1, 128), qw.dequantize(torch.float64), 1e-6)


def test_memory_is_that_of_the_packed_codes():
    qw = random_weight(1024, 1024, 4, 64, True)
    layer = QuantLinear(qw, dtype=torch.bfloat16, kernel="int4")  # qdesk's: test_native_kernels
    held = sum(b.numel() * b.element_size() for b in layer.buffers())
    # 4 bits per weight plus the op's (scale, zero) pair per group of 64 in bf16
    assert held == 1024 * 1024 // 2 + 1024 * (1024 // 64) * 2 * 2
    assert held < 0.3 * 1024 * 1024 * 2  # under a third of the dense bf16 weight
