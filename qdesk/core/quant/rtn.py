"""Round to nearest, with an optional per-group clipping search, plain or
weighted by the calibration inputs (activation-weighted rounding)."""

from __future__ import annotations

import torch

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import QuantConfig
from qdesk.core.quant.primitives import (
    QuantizedWeight,
    choose_qparams,
    mse_shrink,
    output_shrink,
    quantize,
    scale_dtype_for,
)

# Activation-weighted search: a finer and wider grid than the plain one (the
# weighting lets it clip more where the inputs are small).
WEIGHTED_GRID = 20
WEIGHTED_MAX_SHRINK = 0.3


def column_mean_square(stats) -> torch.Tensor:
    """Per-input-column mean of x^2 over the calibration tokens (in,) float32: what
    an importance matrix holds; the Hessian's diagonal divided by the tokens."""
    hessian = getattr(stats, "hessian", None)
    if hessian is None:
        raise BadInput("activation-weighted RTN needs calibration statistics for every weight")
    return hessian.diagonal().float() / max(1, stats.tokens)


def rtn_qparams(w: torch.Tensor, config: QuantConfig, clip_search: bool,
                column_weight: torch.Tensor | None = None):
    """(scale, zero) of w (out, in) for ``config``'s format; the range search minimises
    the squared weight error, weighted per column by ``column_weight`` (in,) if given."""
    sdt = scale_dtype_for(w.dtype)
    narrow = getattr(config, "narrow_grid", False)
    shrink = 1.0
    if column_weight is not None:
        shrink = mse_shrink(w, config.bits, config.group_size, config.symmetric, sdt,
                            WEIGHTED_GRID, WEIGHTED_MAX_SHRINK, narrow, column_weight)
    elif clip_search:
        shrink = mse_shrink(w, config.bits, config.group_size, config.symmetric, sdt,
                            narrow=narrow)
    return choose_qparams(w, config.bits, config.group_size, config.symmetric, shrink, sdt,
                          narrow)


def quantize_rtn(w: torch.Tensor, config: QuantConfig, stats=None) -> QuantizedWeight:
    """w: (out, in) -> its round-to-nearest quantization (activation-weighted when
    the config asks for it: ``stats`` then must hold the Hessian)."""
    weight = column_mean_square(stats) if getattr(config, "act_weighted", False) else None
    scale, zero = rtn_qparams(w, config, getattr(config, "clip_search", False), weight)
    q = quantize(w, scale, zero, config.bits, config.group_size)
    return QuantizedWeight(q, scale, zero, config.bits, config.group_size)


def quantize_output_clipped(w: torch.Tensor, config: QuantConfig, stats=None) -> QuantizedWeight:
    """Round to nearest with each group's range chosen by output error when a
    Hessian is at hand (AWQ after its scaling), by weight error otherwise."""
    hessian = getattr(stats, "hessian", None)
    if hessian is None or not getattr(config, "clip_search", False):
        return quantize_rtn(w, config, stats)
    sdt = scale_dtype_for(w.dtype)
    narrow = getattr(config, "narrow_grid", False)
    shrink = output_shrink(w, config.bits, config.group_size, config.symmetric, sdt, hessian,
                           narrow=narrow)
    scale, zero = choose_qparams(w, config.bits, config.group_size, config.symmetric, shrink, sdt,
                                 narrow)
    q = quantize(w, scale, zero, config.bits, config.group_size)
    return QuantizedWeight(q, scale, zero, config.bits, config.group_size)
