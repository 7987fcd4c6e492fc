"""``QuantLinear``: a Linear layer whose weight stays quantized in memory.

It keeps a checkpoint's codes, scales and zero points (packed for the fastest
kernel the device has) and multiplies with them, instead of the dense weight a
plain ``from_pretrained`` would make. Which kernel, per layer:

    CPU   native qdesk's own kernel (qdesk_kernels/cpu/qdesk_cpu.c, float32 products):
                 2-4-bit codes in 4 bits, 5-8-bit in 8, widths and groups of 16s
          int4   torch's _weight_int4pack_mm_for_cpu: 2-4-bit codes (one plane) and
                 5-8-bit grouped codes (two planes), group a multiple of 32
          int8   torch's _weight_int8pack_mm: up to 8-bit, one scale per row
          dense  the dequantized weight (other shapes; a dtype the ops are slow in)
    CUDA  triton qdesk_kernels' weight-only GEMV/GEMM (bf16/fp16 activations)
          dense  otherwise

Every kernel computes with the checkpoint's exact weight (cpu_kernels explains
why each is exact); a kernel that cannot is skipped for the next, never used
approximately. Whether each op is faster than a dense matmul in a dtype is
measured once per process, and the faster ops are tried first: on x86 torch's
int4 op is vectorized for bfloat16 and AVX-512 only (in float32 it measured 10x
slower than a dense matmul; on an AVX2 CPU in bfloat16 0.9x a float32 one),
where qdesk's kernel measured 2.7x a float32 matmul (2048 x 8192, one thread).
"""

from __future__ import annotations

import functools
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from qdesk.core.packed import native
from qdesk.core.packed.cpu_kernels import DenseWeight, Int4Planes, Int8Channel, NotExact, op_group
from qdesk.core.packed.int4_layout import int4_op_available
from qdesk.core.packed.native_kernels import NativeCodes
from qdesk.core.quant.primitives import QuantizedWeight

log = logging.getLogger(__name__)

FAST_ENOUGH = 1.25  # an op must beat the dense matmul by this much to be chosen
CLEARLY_FASTER = 1.5  # another op must beat qdesk's kernel by this much to come first


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
    """How many times faster ``op`` ("int4", "int8": torch's; "native": qdesk's)
    multiplies one row by a 2048 x 2048 weight than a dense matmul in ``dtype``
    does, on this CPU.

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
        impl = _kernel_class(op)(qw, dtype)
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
    """The ops that can take this weight and beat a dense matmul in ``dtype``,
    fastest first, then "dense"."""
    n, k = qw.q.shape
    usable = []
    if native.library() is not None:
        usable.append("native")
    if int4_op_available() and op_group(k, qw.group_size):
        usable.append("int4")
    if qw.group_size in (-1, k) and hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        usable.append("int8")
    speed = {op: op_speedup(op, dtype) for op in usable}
    if "int4" in speed and qw.bits > 4:
        speed["int4"] /= 2  # two planes, two op calls
    # The probe's dense weight (16 MiB in float32) sits in a large cache, where
    # it measured 0.95-1.36x qdesk's AVX2 kernel from run to run; a model's
    # weights come from memory, and the kernel reads an eighth of float32's
    # bytes (see placement.py for a whole decode step): taken always.
    fast = [op for op in usable if speed[op] >= FAST_ENOUGH
            or (op == "native" and native.simd() in ("avx2", "avx512"))]
    # Between the ops a one-thread probe of ~0.5 ms cannot rank closely (on one
    # AVX2 CPU native's figure moved 1.4-2.3x from run to run, torch's int4 op's
    # sat at 1.3x), a model must not switch kernels from one load to the next:
    # qdesk's kernel keeps first place unless another is clearly faster (on
    # AVX-512 CPUs torch's int4 op in bfloat16 is, several times).
    if "native" in fast:
        speed = {**speed, "native": speed["native"] * CLEARLY_FASTER}
    return sorted(fast, key=speed.get, reverse=True) + ["dense"]


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
    return {"int4": Int4Planes, "int8": Int8Channel, "dense": DenseWeight,
            "native": NativeCodes}[name]


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
        # A decode step calls every Linear once per token: the kernels that take
        # any leading shape are called directly (``run``), not through the
        # submodule's __call__ and reshapes (measured: ~40 us a layer in Python
        # before, against ~15 us of arithmetic for the demo's smallest layers).
        self.run = getattr(self.impl, "run", None)
        self.has_bias = bias is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self.run
        if run is not None:
            y = run(x)
        else:
            shape = x.shape
            y = self.impl(x.reshape(-1, shape[-1])).reshape(*shape[:-1], self.out_features)
        return y + self.bias if self.has_bias else y

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
    built from a config for a benchmark), then prepare the model to run as a
    packed checkpoint loads (``finish_packed``). Returns {kernel: number of layers}."""
    counts: dict[str, int] = {}
    for name, qw in records.items():
        old = model.get_submodule(name)
        if not isinstance(old, nn.Linear) or tuple(qw.q.shape) != tuple(old.weight.shape):
            raise ValueError(f"{name} is not a Linear of shape {tuple(qw.q.shape)}")
        layer = QuantLinear(qw, old.bias, dtype, old.weight.device)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        counts[layer.kernel] = counts.get(layer.kernel, 0) + 1
    finish_packed(model, dtype, set(records))
    return counts


def finish_packed(model: nn.Module, dtype: torch.dtype, quantized: set[str]) -> dict:
    """The rest of the model in ``dtype``, as the checkpoint loader leaves it:
    in a float32 model on qdesk's CPU kernels, 16-bit embedding and head
    weights stay 16-bit (``use_sixteen_bit_products``); sibling Linears stacked
    (``fuse_siblings``). Returns what was done, for the model's facts."""
    from qdesk.core.packed.fusion import fuse_siblings
    from qdesk.core.packed.native_kernels import sixteen_bit_keys, use_sixteen_bit_products

    keep = set()
    if dtype == torch.float32 and native.library() is not None and all(
            p.device.type == "cpu" for p in model.parameters()):
        keep = sixteen_bit_keys(model, quantized)
    converted: dict[int, torch.Tensor] = {}  # a tied weight stays one tensor
    # A QuantLinear and what it holds (its kernel's scales stay as stored) keep
    # their own dtypes.
    inside = {id(m) for q in model.modules() if isinstance(q, QuantLinear) for m in q.modules()}
    for name, module in model.named_modules():
        if id(module) in inside:
            continue
        for leaf, t in list(module.named_parameters(recurse=False)) + list(
                module.named_buffers(recurse=False)):
            full = f"{name}.{leaf}" if name else leaf
            if t is None or not t.is_floating_point() or t.dtype == dtype:
                continue
            if full in keep and t.dtype in (torch.bfloat16, torch.float16):
                continue
            if id(t) not in converted:
                new = t.detach().to(dtype)
                converted[id(t)] = (nn.Parameter(new, requires_grad=False)
                                    if isinstance(t, nn.Parameter) else new)
            if isinstance(t, nn.Parameter):
                setattr(module, leaf, converted[id(t)])
            else:
                module.register_buffer(leaf, converted[id(t)], persistent=leaf not in
                                       module._non_persistent_buffers_set)
    sixteen = use_sixteen_bit_products(model) if keep else ()
    return {"stacked": fuse_siblings(model), "sixteen_bit": sixteen}
