"""``QuantLinear``: a Linear layer whose weight stays quantized in memory.

It keeps a checkpoint's codes, scales and zero points (packed for the fastest
kernel the device has) and multiplies with them, instead of the dense weight a
plain ``from_pretrained`` would make. Which kernel, per layer:

    CPU   int4   torch's _weight_int4pack_mm_for_cpu: 2-4-bit codes (one plane) and
                 5-8-bit grouped codes (two planes), group a multiple of 32
          int8   torch's _weight_int8pack_mm: up to 8-bit, one scale per row
          dense  the dequantized weight (other shapes; a dtype the ops are slow in)
    CUDA  triton qdesk_kernels' weight-only GEMV/GEMM (bf16/fp16 activations)
          dense  otherwise

Every kernel computes with the checkpoint's exact weight (cpu_kernels explains
why each is exact); a kernel that cannot is skipped for the next, never used
approximately. Whether torch's ops are faster than a dense matmul in a dtype is
measured once per process (on x86 the int4 op is vectorized for bfloat16 only:
in float32 it measured 10x slower than a dense matmul).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from qdesk.core.packed.cpu_kernels import DenseWeight, Int4Planes, Int8Channel, NotExact, op_group
from qdesk.core.packed.int4_layout import int4_op_available
from qdesk.core.quant.primitives import QuantizedWeight

log = logging.getLogger(__name__)

FAST_ENOUGH = 1.25  # an op must beat the dense matmul by this much to be chosen


def _median_seconds(fn, reps: int = 15) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@functools.cache
def op_speedup(op: str, dtype: torch.dtype) -> float:
    """How many times faster torch's ``op`` ("int4" or "int8") multiplies one row by
    a 2048 x 2048 weight than a dense matmul in ``dtype`` does, on this CPU.

    Timed on one thread: the kernels' own speed, which a core busy elsewhere
    (two threads, one of them descheduled) would swamp."""
    k = n = 2048
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, k, generator=g).to(dtype)
    dense = torch.randn(n, k, generator=g).to(dtype)
    qw = QuantizedWeight(
        torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8),
        torch.rand(n, 1 if op == "int8" else k // 64, generator=g).to(torch.bfloat16),
        None, 4, -1 if op == "int8" else 64,
    )
    try:
        impl = (Int8Channel if op == "int8" else Int4Planes)(qw, dtype)
    except (NotExact, RuntimeError):
        return 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            t_op = _median_seconds(lambda: impl(x))
            t_dense = _median_seconds(lambda: F.linear(x, dense))
    finally:
        torch.set_num_threads(threads)
    log.info("CPU %s op in %s: %.3f ms, dense %.3f ms", op, dtype, t_op * 1e3, t_dense * 1e3)
    return t_dense / t_op


def _cpu_candidates(qw: QuantizedWeight, dtype: torch.dtype) -> list[str]:
    n, k = qw.q.shape
    per_row = qw.group_size in (-1, k)
    out = []
    if int4_op_available() and op_group(k, qw.group_size) and op_speedup("int4", dtype) >= FAST_ENOUGH:
        out.append("int4")
    if per_row and hasattr(torch.ops.aten, "_weight_int8pack_mm") and (
        op_speedup("int8", dtype) >= FAST_ENOUGH
    ):
        # one op call where int4 would need two planes
        out.insert(0 if qw.bits > 4 else len(out), "int8")
    return out + ["dense"]


def candidates(qw: QuantizedWeight, dtype: torch.dtype, device: torch.device) -> list[str]:
    """Kernels to try for this weight, best first; "dense" always last."""
    if device.type == "cuda":
        from qdesk.core.packed.cuda_kernel import triton_supports

        return (["triton"] if triton_supports(qw, dtype) else []) + ["dense"]
    if device.type == "cpu":
        return _cpu_candidates(qw, dtype)
    return ["dense"]


def _kernel_class(name: str):
    if name == "triton":
        from qdesk.core.packed.cuda_kernel import TritonWeight

        return TritonWeight
    return {"int4": Int4Planes, "int8": Int8Channel, "dense": DenseWeight}[name]


class QuantLinear(nn.Module):
    """y = x W^T + b with W (out, in) = (q - zero) * scale per group of input columns.

    qw: the codes (int8 (out, in)), scales and zero points, as the quantizer and
    the checkpoint hold them. dtype: the activation dtype (inputs and outputs).
    kernel: force one ("int4", "int8", "dense", "triton"); by default the first
    of ``candidates`` that holds the weight exactly.
    """

    def __init__(
        self,
        qw: QuantizedWeight,
        bias: torch.Tensor | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cpu",
        kernel: str | None = None,
    ) -> None:
        super().__init__()
        device = torch.device(device)
        self.out_features, self.in_features = qw.q.shape
        self.bits, self.group_size, self.symmetric = qw.bits, qw.group_size, qw.symmetric
        self.compute_dtype = dtype
        on_device = QuantizedWeight(
            qw.q.to(device), qw.scale.to(device),
            None if qw.zero is None else qw.zero.to(device), qw.bits, qw.group_size,
        )
        names = [kernel] if kernel else candidates(qw, dtype, device)
        self.impl, reasons = None, []
        for name in names:
            try:
                self.impl = _kernel_class(name)(on_device, dtype)
                break
            except NotExact as e:
                reasons.append(f"{name}: {e}")
        if self.impl is None:
            raise NotExact("; ".join(reasons))
        self.kernel = self.impl.name
        self.skipped = tuple(reasons)  # why faster kernels were not used
        self.register_buffer("bias", None if bias is None else bias.detach().to(device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.impl(x.reshape(-1, shape[-1]))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (out, in) this layer multiplies with."""
        return self.impl.dequantize(dtype)

    def extra_repr(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"g{self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{self.bits}-bit {g} {'sym' if self.symmetric else 'asym'}, kernel={self.kernel}")


def pack_linears(model: nn.Module, records: dict[str, QuantizedWeight], dtype: torch.dtype) -> dict:
    """Replace each ``nn.Linear`` named in ``records`` by a ``QuantLinear`` of its
    quantized weight (in place; e.g. right after a quantization job, or a model
    built from a config for a benchmark). Returns {kernel: number of layers}."""
    counts: dict[str, int] = {}
    for name, qw in records.items():
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear) or tuple(qw.q.shape) != tuple(old.weight.shape):
            raise ValueError(f"{name} is not a Linear of shape {tuple(qw.q.shape)}")
        layer = QuantLinear(qw, old.bias, dtype, old.weight.device)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        counts[layer.kernel] = counts.get(layer.kernel, 0) + 1
    return counts
