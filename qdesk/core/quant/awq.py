"""AWQ (Lin et al. 2023): scale salient input channels up before rounding.

For a group of Linears fed the same input x (after a norm or a Linear), choose
s = mean|x|^alpha (alpha on a grid in [0, 1)), minimising the output error
sum_l || x (Q(W_l s) / s - W_l)^T ||^2 computed exactly from the Hessian
H = sum x x^T as tr(D H D^T). The chosen s is folded into the previous op as
the family's layout says (``layouts``: a norm weight, a ``1 + w`` norm weight,
or a Linear's output rows divided by s), the Linears' columns multiplied by s,
so the float model is unchanged before rounding; the job measures that it is
(``fold_change``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import AWQConfig
from qdesk.core.quant.layouts import Family, ScaleGroup
from qdesk.core.quant.primitives import choose_qparams, fake_quantize, scale_dtype_for
from qdesk.core.quant.stats import InputStats

log = logging.getLogger(__name__)


def _output_error(w: torch.Tensor, wq: torch.Tensor, h: torch.Tensor) -> float:
    d = wq - w
    return float(((d @ h) * d).sum())


def search_scales(
    weights: list[torch.Tensor], configs: list[AWQConfig], stats: InputStats
) -> tuple[torch.Tensor, float]:
    """The best per-channel scale s (in,) and its alpha for Linears sharing an input."""
    h = stats.hessian
    xmean = stats.abs_mean.clamp_min(1e-6)
    grid = configs[0].grid
    best = (float("inf"), torch.ones_like(xmean), 0.0)
    for i in range(grid):
        alpha = i / grid
        s = xmean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        s_inv = 1.0 / s
        err = 0.0
        for w, c in zip(weights, configs):
            ws = w.float() * s
            scale, zero = choose_qparams(
                ws, c.bits, c.group_size, c.symmetric, 1.0, scale_dtype_for(w.dtype),
                c.narrow_grid,
            )
            wq = fake_quantize(ws, scale, zero, c.bits, c.group_size) * s_inv
            err += _output_error(w.float(), wq, h)
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def fold(prev: nn.Module, group: ScaleGroup, s: torch.Tensor, rows: slice | None) -> None:
    """Divide ``prev``'s output (the group's input) by s (width,), in place."""
    w = prev.weight
    if group.fold == "rows":
        w[rows].div_(s.view(-1, 1).to(w.dtype))
        if getattr(prev, "bias", None) is not None:
            prev.bias[rows].div_(s.to(prev.bias.dtype))
        return
    if group.fold == "norm_plus_one":
        w.copy_(((1.0 + w.float()) / s - 1.0).to(w.dtype))
    else:
        w.div_(s.to(w.dtype))
    if getattr(prev, "bias", None) is not None:  # a LayerNorm's shift scales too
        prev.bias.div_(s.to(prev.bias.dtype))


def group_modules(layer: nn.Module, group: ScaleGroup, family: Family):
    """(prev, linears, rows) of a group in ``layer``; rows None when the shapes
    rule the fold out (grouped-query attention). A module the description names
    and the layer lacks is an error: the description would be wrong."""
    modules = dict(layer.named_modules())
    missing = [n for n in (group.prev, *group.linears) if n not in modules]
    if missing:
        raise BadInput(
            f"AWQ's description of the {family.name} family names {', '.join(missing)}, "
            f"which this {type(layer).__name__} lacks: refusing to guess (use gptq, rtn or hqq)"
        )
    prev = modules[group.prev]
    linears = [modules[n] for n in group.linears]
    width = linears[0].in_features
    if isinstance(prev, nn.Linear):
        return prev, linears, group.rows(prev.out_features, width)
    return prev, linears, slice(0, width)


@torch.no_grad()
def apply_awq(
    layer: nn.Module, specs: dict[str, object], stats: dict[str, InputStats], family: Family
) -> dict[str, float]:
    """Scale every group of the layer whose Linears all use AWQ; return alpha per group.

    specs / stats are keyed by the Linear's name inside ``layer``.
    """
    chosen = {}
    for group in family.scale_groups:
        if not all(isinstance(specs.get(n), AWQConfig) for n in group.linears):
            continue
        prev, linears, rows = group_modules(layer, group, family)
        if rows is None:
            log.debug("AWQ %s -> %s: shapes rule the fold out", group.prev, group.linears)
            continue
        st = stats[group.linears[0]]
        s, alpha = search_scales([m.weight for m in linears], [specs[n] for n in group.linears], st)
        s = s.to(linears[0].weight.device)
        fold(prev, group, s, rows)
        for m in linears:
            m.weight.mul_(s.to(m.weight.dtype))
        st.scale_inputs(s)
        chosen[group.prev] = alpha
        log.debug("AWQ %s -> %s: alpha %.2f", group.prev, group.linears, alpha)
    return chosen


# A correct fold changes a layer's float output only by the rounding of the
# folded weights: about 1e-7 of it in float32, and at most 0.6% in bfloat16
# (measured on every described family, tests/core/quant/test_families.py). A
# wrong one changes it by tens of percent.
FOLD_TOLERANCE = 0.02


def fold_change(before: torch.Tensor, after: torch.Tensor, x: torch.Tensor) -> float:
    """How much folding changed a decoder layer's own contribution (its output
    minus its residual input x): ||after - before|| / ||before - x||."""
    num = torch.linalg.vector_norm((after - before).float())
    den = torch.linalg.vector_norm((before - x).float()).clamp_min(1e-12)
    return float(num / den)
