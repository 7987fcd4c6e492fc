"""Quantized weights and compressed-tensors checkpoints for the packed-weight tests,
made with qdesk's own primitives and checkpoint writer (no quantization job)."""

from __future__ import annotations

from pathlib import Path

import torch

from qdesk.core.quant.checkpoint import write_checkpoint
from qdesk.core.quant.primitives import QuantizedWeight, choose_qparams, quantize


def random_weight(n: int, k: int, bits: int, group: int, symmetric: bool, float_zero: bool = False,
                  seed: int = 0, scale_dtype=torch.bfloat16) -> QuantizedWeight:
    """RTN of a random (n, k) weight; ``float_zero`` makes the zero point a
    fractional 16-bit float (HQQ's format)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    scale, zero = choose_qparams(w, bits, group, symmetric, scale_dtype=scale_dtype)
    q = quantize(w, scale, zero, bits, group)
    if float_zero:
        base = zero.float() if zero is not None else torch.zeros_like(scale.float())
        zero = (base + torch.rand(base.shape, generator=g) - 0.5).to(scale_dtype)
    return QuantizedWeight(q, scale, zero, bits, group)


def rtn_records(model, bits: int, group: int, symmetric: bool, float_zero: bool = False,
                skip=("lm_head",)) -> dict[str, QuantizedWeight]:
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip):
            w = module.weight.detach().float()
            g = group if group == -1 or w.shape[1] % group == 0 else -1
            scale, zero = choose_qparams(w, bits, g, symmetric)
            q = quantize(w, scale, zero, bits, g)
            if float_zero and zero is not None:
                zero = (zero.float() + 0.25).to(scale.dtype)
            out[name] = QuantizedWeight(q, scale, zero, bits, g)
    return out


def write_rtn_checkpoint(model, tokenizer, out: Path, bits: int = 4, group: int = 32,
                         symmetric: bool = True, float_zero: bool = False,
                         records: dict | None = None) -> Path:
    """A qdesk checkpoint folder (compressed-tensors + qdesk.json) of ``model``."""
    records = records or rtn_records(model, bits, group, symmetric, float_zero)
    recipe = {"config": {"method": "rtn", "bits": bits, "group_size": group,
                         "symmetric": symmetric}, "parameters": model.num_parameters()}
    return write_checkpoint(model, tokenizer, records, Path(out), recipe)


def best_kernel(bits: int, group: int, symmetric: bool = True, float_zero: bool = False,
                dtype=torch.bfloat16, k: int = 64) -> str:
    """The kernel QuantLinear picks on this CPU for such a weight (it depends on
    the CPU: torch's int4 op where it is fast, qdesk's own kernel on AVX2)."""
    from qdesk.core.packed import QuantLinear

    g = group if group == -1 or k % group == 0 else -1
    return QuantLinear(random_weight(32, k, bits, g, symmetric, float_zero), dtype=dtype).kernel


def runtime_of(counts: dict[str, int]) -> str:
    """The start of ``quantization.runtime`` for these kernel counts (qdesk's
    CPU kernel with the build this machine runs)."""
    from qdesk.core.packed import native

    def named(k: str) -> str:
        return f"{k} {native.simd()}" if k == "native" else k

    return "packed (" + ", ".join(f"{n} {named(k)}" for k, n in sorted(counts.items()))


def expected_kernels(model, bits: int, group: int, symmetric: bool = True,
                     float_zero: bool = False, dtype=torch.bfloat16) -> dict[str, int]:
    """Kernel -> how many of ``model``'s decoder Linears a packed load puts on it:
    the choice depends on each layer's input width (torch's int8 op takes only a
    group as wide as the row), and the ranking of the ops on how this CPU's
    one-time probe came out (a busy machine ranked torch's int8 op above qdesk's
    kernel where both apply)."""
    counts: dict[str, int] = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and "lm_head" not in name:
            kernel = best_kernel(bits, group, symmetric, float_zero, dtype, k=m.in_features)
            counts[kernel] = counts.get(kernel, 0) + 1
    return counts
