"""Where a model runs and in which dtype, and how much memory is there."""

from __future__ import annotations

import functools
import logging
import os
import statistics
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda" or "cpu"
    dtype: str  # "bfloat16" or "float32"
    reason: str  # why this dtype, for the user


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@functools.cache
def cpu_matmul_seconds(dtype_name: str, width: int, height: int) -> float:
    """Median seconds of one (1 x width) @ (width x height) product: a decode step's shape."""
    import torch

    dtype = getattr(torch, dtype_name)
    x = torch.randn(1, width, dtype=dtype)
    w = torch.randn(height, width, dtype=dtype)
    times = []
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(2):
                torch.nn.functional.linear(x, w)
            times.append(time.perf_counter() - t)
    return statistics.median(times) / 2


@dataclass(frozen=True)
class DecodeShape:
    """The matrix products of one decode step of a decoder-only transformer."""

    hidden: int
    intermediate: int
    layers: int
    kv_width: int
    vocab: int

    def products(self) -> list[tuple[int, int, int]]:
        """(in_features, out_features, how many per step)."""
        d, f, kv = self.hidden, self.intermediate, self.kv_width
        per_layer = [(d, d, 2), (d, kv, 2), (d, f, 2), (f, d, 1)]
        return [(i, o, n * self.layers) for i, o, n in per_layer] + [(d, self.vocab, 1)]


def decode_step_seconds(dtype_name: str, shape: DecodeShape) -> float:
    return sum(n * cpu_matmul_seconds(dtype_name, i, o) for i, o, n in shape.products())


def choose_placement(shape: DecodeShape, dtype: str | None = None) -> Placement:
    """CUDA in bf16 when present; on the CPU the faster of bf16 and float32, measured."""
    if cuda_available():
        return Placement("cuda", dtype or "bfloat16", "as asked" if dtype else "CUDA: bf16")
    if dtype:
        return Placement("cpu", dtype, "as asked")
    # Which is faster depends on the CPU (fast bf16 instructions or not) and on
    # the shapes (small products favour float32, a large output head bf16), so
    # time the model's own decode-step products in both and take the faster.
    # The verdict is kept on disk per CPU, torch version and shape: the same
    # model then runs in the same dtype every time (a busy moment during a
    # later measurement must not change the user's results).
    key = f"{_cpu_name()}|torch {_torch_version()}|{shape}"
    cache = _read_dtype_cache()
    entry = cache.get(key)
    if (isinstance(entry, dict) and entry.get("dtype") in ("bfloat16", "float32")
            and isinstance(entry.get("reason"), str)):  # a damaged entry is measured again
        return Placement("cpu", entry["dtype"], entry["reason"] + " (kept from the first load)")
    bf16 = decode_step_seconds("bfloat16", shape)
    f32 = decode_step_seconds("float32", shape)
    chosen = "bfloat16" if bf16 <= f32 else "float32"
    reason = (
        f"CPU: a decode step's products measured {bf16 * 1e3:.1f} ms in bf16, "
        f"{f32 * 1e3:.1f} ms in float32"
    )
    log.info(reason)
    cache[key] = {"dtype": chosen, "reason": reason}
    _write_dtype_cache(cache)
    return Placement("cpu", chosen, reason)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _torch_version() -> str:
    import torch

    return torch.__version__


_DTYPE_CACHE = "cpu_dtype.json"


def _read_dtype_cache() -> dict:
    from qdesk.core.paths import read_json_cache

    return read_json_cache(_DTYPE_CACHE)


def _write_dtype_cache(cache: dict) -> None:
    from qdesk.core.paths import write_json_cache

    write_json_cache(_DTYPE_CACHE, cache)


def available_memory_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB"
