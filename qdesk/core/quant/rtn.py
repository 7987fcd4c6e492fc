"""Round to nearest, with an optional per-group clipping search."""

from __future__ import annotations

import torch

from qdesk.core.quant.configs import QuantConfig
from qdesk.core.quant.primitives import (
    QuantizedWeight,
    choose_qparams,
    mse_shrink,
    output_shrink,
    quantize,
    scale_dtype_for,
)


def rtn_qparams(w: torch.Tensor, config: QuantConfig, clip_search: bool):
    sdt = scale_dtype_for(w.dtype)
    shrink = (
        mse_shrink(w, config.bits, config.group_size, config.symmetric, sdt) if clip_search else 1.0
    )
    return choose_qparams(w, config.bits, config.group_size, config.symmetric, shrink, sdt)


def quantize_rtn(w: torch.Tensor, config: QuantConfig, stats=None) -> QuantizedWeight:
    """w: (out, in) -> its round-to-nearest quantization."""
    scale, zero = rtn_qparams(w, config, getattr(config, "clip_search", False))
    q = quantize(w, scale, zero, config.bits, config.group_size)
    return QuantizedWeight(q, scale, zero, config.bits, config.group_size)


def quantize_output_clipped(w: torch.Tensor, config: QuantConfig, stats=None) -> QuantizedWeight:
    """Round to nearest with each group's range chosen by output error when a
    Hessian is at hand (AWQ after its scaling), by weight error otherwise."""
    hessian = getattr(stats, "hessian", None)
    if hessian is None or not getattr(config, "clip_search", False):
        return quantize_rtn(w, config, stats)
    sdt = scale_dtype_for(w.dtype)
    shrink = output_shrink(w, config.bits, config.group_size, config.symmetric, sdt, hessian)
    scale, zero = choose_qparams(w, config.bits, config.group_size, config.symmetric, shrink, sdt)
    q = quantize(w, scale, zero, config.bits, config.group_size)
    return QuantizedWeight(q, scale, zero, config.bits, config.group_size)
