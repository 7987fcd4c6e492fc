"""QuantLinear's Triton kernel: chosen on CUDA, exact weights, bf16 rounding; on the
CPU forced under the interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).parents[1] / "core" / "packed"))

from packed_helpers import random_weight  # noqa: E402

from qdesk.core.packed import QuantLinear  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("bits,group,symmetric", [(4, 32, True), (4, 64, False), (8, -1, True),
                                                  (3, 32, False), (2, 64, True)])
@pytest.mark.parametrize("rows", [1, 12])
def test_triton_kernel_in_quant_linear(bits, group, symmetric, rows):
    qw = random_weight(48, 128, bits, group, symmetric, seed=bits)
    exact = qw.dequantize(torch.float64)
    layer = QuantLinear(qw, torch.randn(48), torch.bfloat16, DEVICE, kernel="triton")
    assert layer.kernel == "triton"
    assert torch.equal(layer.dequantize(torch.float64).cpu(), exact)
    x = torch.randn(2, rows, 128).to(torch.bfloat16)
    y = layer(x.to(DEVICE)).cpu()
    ref = x.reshape(-1, 128).double() @ exact.t() + layer.bias.cpu().double()
    bound = x.reshape(-1, 128).abs().double() @ exact.abs().t() + layer.bias.cpu().abs().double()
    assert float(((y.reshape(-1, 48).double() - ref).abs() / bound).max()) <= 2 * 2**-7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_quant_linear_picks_triton():
    qw = random_weight(256, 512, 4, 128, True)
    assert QuantLinear(qw, None, torch.bfloat16, "cuda").kernel == "triton"
    assert QuantLinear(qw, None, torch.float32, "cuda").kernel == "dense"
