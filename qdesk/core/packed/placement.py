"""The dtype a packed model computes in: the dense models' policy, with its own products.

A dense model on the CPU runs in whichever of bfloat16 and float32 makes its
decode step's matrix products faster, measured (``qdesk.core.models.device``).
A packed model follows the same rule, timing the products it really runs: its
Linears through the kernel ``QuantLinear`` picks in each dtype, and the output
head (left unquantized) as the model would run it (in float32 from its 16-bit
weight on qdesk's kernel, ``head_seconds``). On an AVX2 CPU qdesk's kernel
computes in float32 (a 4-bit demo step's products: 18.5 ms against 27.9 in
bfloat16 with torch's ops, one thread); on AVX-512 CPUs torch's int4 op is
vectorized for bfloat16 and a 4-bit model there may compute in bfloat16 while
its dense original computes in float32. The reason string says which products
measured what. The verdict is kept on disk per CPU, torch version, kernels,
shape and format, like the dense policy's, so a model runs in the same dtype
every time.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

from qdesk.core.models.device import DecodeShape, Placement, cuda_available
from qdesk.core.paths import read_json_cache, write_json_cache

log = logging.getLogger(__name__)

DTYPES = ("bfloat16", "float32")


def _random_layer(in_f: int, out_f: int, bits: int, group: int, dtype: torch.dtype):
    from qdesk.core.packed.quant_linear import QuantLinear
    from qdesk.core.quant.primitives import QuantizedWeight

    g = torch.Generator().manual_seed(0)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    groups = 1 if group == -1 else in_f // group
    qw = QuantizedWeight(
        torch.randint(lo, hi, (out_f, in_f), generator=g, dtype=torch.int8),
        (torch.rand(out_f, groups, generator=g) / 64).to(torch.bfloat16), None, bits, group,
    )
    return QuantLinear(qw, None, dtype, "cpu")


def _median_seconds(fn) -> float:
    times = []
    with torch.inference_mode():
        fn()
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(2):
                fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times) / 2


def product_seconds(dtype_name: str, in_f: int, out_f: int, bits: int | None = None,
                    group: int = -1) -> float:
    """Median seconds of one row through an (in_f -> out_f) layer: packed at
    ``bits`` (the kernel QuantLinear picks in this dtype), or dense (bits None)."""
    dtype = getattr(torch, dtype_name)
    x = torch.randn(1, in_f).to(dtype)
    if bits is not None:
        layer = _random_layer(in_f, out_f, bits, group, dtype)
        return _median_seconds(lambda: layer(x))
    w = torch.randn(out_f, in_f).to(dtype)
    return _median_seconds(lambda: torch.nn.functional.linear(x, w))


def head_seconds(dtype_name: str, in_f: int, out_f: int) -> float:
    """One row through the unquantized output head as a packed model runs it: in
    float32 from its 16-bit weight on qdesk's kernel where there is one
    (``native_kernels.use_sixteen_bit_products``), else a dense product in the dtype."""
    from qdesk.core.packed import native

    if dtype_name == "float32" and native.library() is not None:
        from qdesk.core.packed.native_kernels import Dense16Linear

        head = Dense16Linear(torch.randn(out_f, in_f).to(torch.bfloat16))
        x = torch.randn(1, in_f)
        return _median_seconds(lambda: head(x))
    return product_seconds(dtype_name, in_f, out_f)


def packed_step_seconds(dtype_name: str, shape: DecodeShape, bits: int, group: int) -> float:
    """A decode step's products on one thread: packed decoder Linears, dense head.

    One thread, so that a core busy elsewhere cannot swamp the comparison (both
    dtypes' kernels scale alike with threads)."""
    *linears, (d, vocab, _) = shape.products()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        total = head_seconds(dtype_name, d, vocab)
        for in_f, out_f, n in linears:
            g = group if group == -1 or in_f % group == 0 else -1
            total += n * product_seconds(dtype_name, in_f, out_f, bits, g)
    finally:
        torch.set_num_threads(threads)
    return total


def packed_placement(shape: DecodeShape, bits: int, group: int, dtype: str | None = None,
                     device: str | None = None) -> Placement:
    """CUDA in bf16; on the CPU the faster dtype for this packed format, measured once."""
    if device == "cuda" or (device is None and cuda_available()):
        return Placement("cuda", dtype or "bfloat16", "as asked" if dtype else "CUDA: bf16")
    if dtype:
        return Placement("cpu", dtype, "as asked")
    from qdesk.core.packed import native

    # the kernels' ABI too: a new kernel is timed afresh, not judged by the old one's figures
    kernels = f"qdesk kernels {native.simd() or 'none'} abi {native.ABI}"
    key = f"{_cpu_model()}|torch {torch.__version__}|{kernels}|{shape}|{bits}-bit g{group}"
    cache = _read_cache()
    if key in cache:
        return Placement("cpu", cache[key]["dtype"], cache[key]["reason"] + " (kept from the first load)")
    seconds = {d: packed_step_seconds(d, shape, bits, group) for d in DTYPES}
    chosen = min(DTYPES, key=seconds.get)
    reason = (f"CPU, {bits}-bit packed: a decode step's products measured "
              + ", ".join(f"{seconds[d] * 1e3:.1f} ms in {d}" for d in DTYPES))
    log.info(reason)
    cache[key] = {"dtype": chosen, "reason": reason}
    _write_cache(cache)
    return Placement("cpu", chosen, reason)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


CACHE_NAME = "packed_dtype.json"


def _read_cache() -> dict:
    return read_json_cache(CACHE_NAME)


def _write_cache(cache: dict) -> None:
    write_json_cache(CACHE_NAME, cache)
