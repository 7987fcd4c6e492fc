"""QuantLinear's GPU kernel: qdesk_kernels' Triton GEMV/GEMM over the GPU layout.

Buffers: ``words`` int32 (K / per, N), ``scales`` 16-bit (K / group, N),
``zeros`` float32 (K / group, N) or None (see ``qdesk_kernels.packing``). The
kernels multiply with the exact weight (integer codes times the checkpoint's
scale, zero point subtracted per group in float32) and round once to the
activation dtype. Triton runs on CUDA; on the CPU only under
``TRITON_INTERPRET=1``, which the tests use.
"""

from __future__ import annotations

import torch
from torch import nn

from qdesk.core.packed.cpu_kernels import NotExact
from qdesk.core.quant.primitives import QuantizedWeight


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_supports(qw: QuantizedWeight, dtype: torch.dtype) -> bool:
    if dtype not in (torch.bfloat16, torch.float16) or not triton_available():
        return False
    from qdesk_kernels.packing import STORAGE_BITS

    return qw.bits in STORAGE_BITS


class TritonWeight(nn.Module):
    name = "triton"

    def __init__(self, qw: QuantizedWeight, dtype: torch.dtype) -> None:
        super().__init__()
        if not triton_available():
            raise NotExact("Triton is not installed")
        from qdesk_kernels.packing import STORAGE_BITS, pack_weight
        from qdesk_kernels.wq_linear import check_supported, interpreting

        if qw.bits not in STORAGE_BITS:
            raise NotExact(f"the Triton kernels take 2, 3, 4 or 8-bit codes, not {qw.bits}")
        if qw.q.device.type != "cuda" and not interpreting():
            raise NotExact("Triton kernels run on CUDA (or under TRITON_INTERPRET=1)")
        if not torch.equal(qw.scale.to(dtype).to(torch.float64), qw.scale.to(torch.float64)):
            raise NotExact(f"{qw.scale.dtype} scales are not exact in {dtype}")
        try:
            packed = pack_weight(qw.q, qw.scale.to(dtype), qw.zero, qw.bits, qw.group_size)
            check_supported(packed)
        except ValueError as e:
            raise NotExact(str(e)) from None
        self.out_features, self.in_features = packed.out_features, packed.in_features
        self.bits, self.group = packed.bits, packed.group
        self.register_buffer("words", packed.words)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zeros", packed.zeros)

    def _packed(self):
        from qdesk_kernels.packing import PackedWeight

        return PackedWeight(self.words, self.scales, self.zeros, self.bits, self.group,
                            self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from qdesk_kernels.wq_linear import wq_linear

        return wq_linear(x, self._packed())

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        from qdesk_kernels.packing import dequantize

        return dequantize(self._packed()).to(dtype)
