"""The weight-only Triton kernels against their torch reference (dequantize, then
matmul in float64), over shapes x group sizes x bits x symmetric/asymmetric.
On the CPU they run under TRITON_INTERPRET=1 (small shapes); on a GPU compiled."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from qdesk_kernels.packing import dequantize, linear_reference, pack_weight, unpack_codes  # noqa: E402
from qdesk_kernels.wq_linear import GEMV_MAX_ROWS, wq_linear  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ACT = torch.bfloat16


def _codes(n, k, bits, group, symmetric, float_zero=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    groups = k // (k if group == -1 else group)
    q = torch.randint(lo, hi, (n, k), generator=g, dtype=torch.int8)
    scale = (torch.rand(n, groups, generator=g) / 16 + 1e-3).to(torch.bfloat16)
    zero = None
    if not symmetric:
        zero = torch.randint(lo, hi, (n, groups), generator=g).to(torch.int8)
        if float_zero:
            zero = (zero.float() + torch.rand(n, groups, generator=g)).to(torch.bfloat16)
    return q, scale, zero


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_packing_round_trips(bits):
    q, s, z = _codes(48, 64, bits, 32, False)
    w = pack_weight(q, s, z, bits, 32)
    assert w.words.shape == (64 // w.per_word, 48) and w.words.dtype == torch.int32
    assert torch.equal(unpack_codes(w), q)
    want = ((q.double().reshape(48, 2, 32) - z.double().unsqueeze(-1)) * s.double().unsqueeze(-1))
    assert torch.equal(dequantize(w), want.reshape(48, 64))


def _check(y, x, w):
    ref = x.to(torch.float64) @ dequantize(w).t()
    bound = x.abs().to(torch.float64) @ dequantize(w).abs().t()
    worst = float(((y.to(torch.float64) - ref).abs() / (bound + 1e-30)).max())
    # one rounding to bf16 at the end (the interpreter truncates: 2^-7), float32 sums
    assert worst <= 2**-7, worst


@pytest.mark.parametrize("n,k", [(48, 64), (80, 128)])
@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group", [-1, 32, 64])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("rows", [1, 3, GEMV_MAX_ROWS + 5])
def test_kernels_match_the_reference(n, k, bits, group, symmetric, rows):
    if group != -1 and k % group:
        pytest.skip("group does not divide the width")
    q, s, z = _codes(n, k, bits, group, symmetric, seed=n + k + bits)
    w = pack_weight(q, s, z, bits, group)
    w = type(w)(w.words.to(DEVICE), w.scales.to(DEVICE),
                None if w.zeros is None else w.zeros.to(DEVICE), w.bits, w.group, n, k)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows)).to(ACT).to(DEVICE)
    y = wq_linear(x, w)
    assert y.dtype == ACT and y.shape == (rows, n)
    _check(y.cpu(), x.cpu(), _cpu(w))


def _cpu(w):
    return type(w)(w.words.cpu(), w.scales.cpu(), None if w.zeros is None else w.zeros.cpu(),
                   w.bits, w.group, w.out_features, w.in_features)


def test_float_zero_and_split_k_give_the_same_sums():
    q, s, z = _codes(64, 128, 4, 32, False, float_zero=True)
    w = pack_weight(q, s, z, 4, 32)
    x = torch.randn(2, 128).to(ACT)
    one = wq_linear(x.to(DEVICE), _to(w, DEVICE), split=1).cpu()
    four = wq_linear(x.to(DEVICE), _to(w, DEVICE), split=4).cpu()
    _check(one, x, w)
    _check(four, x, w)
    assert torch.equal(linear_reference(x, w), (x.double() @ dequantize(w).t()).to(ACT))


def _to(w, device):
    return type(w)(w.words.to(device), w.scales.to(device),
                   None if w.zeros is None else w.zeros.to(device), w.bits, w.group,
                   w.out_features, w.in_features)


def test_the_launcher_refuses_what_it_cannot_run():
    q, s, _ = _codes(32, 64, 4, 32, True)
    w = _to(pack_weight(q, s, None, 4, 32), DEVICE)
    with pytest.raises(ValueError, match="must be"):
        wq_linear(torch.randn(2, 48).to(ACT).to(DEVICE), w)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        wq_linear(torch.randn(2, 64, dtype=torch.float64).to(DEVICE), w)
    with pytest.raises(ValueError, match="2, 3, 4 or 8"):
        pack_weight(q, s, None, 5, 32)
    q24, s24, _ = _codes(32, 48, 4, 24, True)
    with pytest.raises(ValueError, match="power-of-two tile"):
        wq_linear(torch.randn(1, 48).to(ACT).to(DEVICE), _to(pack_weight(q24, s24, None, 4, 24),
                                                             DEVICE))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_the_gpu_at_model_shapes():
    for n, k in [(2048, 2048), (8192, 2048), (2048, 8192)]:
        q, s, z = _codes(n, k, 4, 128, True)
        w = _to(pack_weight(q, s, z, 4, 128), "cuda")
        for rows in (1, 64):
            x = torch.randn(rows, k, device="cuda", dtype=ACT)
            _check(wq_linear(x, w).cpu(), x.cpu(), _cpu(w))
