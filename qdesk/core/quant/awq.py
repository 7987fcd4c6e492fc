"""AWQ (Lin et al. 2023): scale salient input channels up before rounding.

For a group of Linears fed the same input x (after a norm or a Linear), choose
s = mean|x|^alpha (alpha on a grid in [0, 1)), minimising the output error
sum_l || x (Q(W_l s) / s - W_l)^T ||^2 computed exactly from the Hessian
H = sum x x^T as tr(D H D^T). The chosen s is folded into the previous op
(norm weight or Linear rows divided by s), the Linears' columns multiplied by s,
so the float model is unchanged before rounding.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from qdesk.core.quant.configs import AWQConfig
from qdesk.core.quant.primitives import choose_qparams, fake_quantize, scale_dtype_for
from qdesk.core.quant.stats import InputStats

log = logging.getLogger(__name__)

# (previous op, Linears it feeds) inside a Llama-style decoder layer.
SCALE_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("self_attn.v_proj", ("self_attn.o_proj",)),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ("mlp.up_proj", ("mlp.down_proj",)),
)


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
                ws, c.bits, c.group_size, c.symmetric, 1.0, scale_dtype_for(w.dtype)
            )
            wq = fake_quantize(ws, scale, zero, c.bits, c.group_size) * s_inv
            err += _output_error(w.float(), wq, h)
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


@torch.no_grad()
def apply_awq(
    layer: nn.Module, specs: dict[str, object], stats: dict[str, InputStats]
) -> dict[str, float]:
    """Scale every group of the layer whose Linears all use AWQ; return alpha per group.

    specs / stats are keyed by the Linear's name inside ``layer``.
    """
    modules = dict(layer.named_modules())
    chosen = {}
    for prev_name, names in SCALE_GROUPS:
        prev = modules.get(prev_name)
        linears = [modules.get(n) for n in names]
        if prev is None or any(m is None for m in linears):
            continue
        if not all(isinstance(specs.get(n), AWQConfig) for n in names):
            continue
        in_features = linears[0].in_features
        if isinstance(prev, nn.Linear) and prev.out_features != in_features:
            continue  # e.g. v_proj -> o_proj with grouped-query attention
        st = stats[names[0]]
        s, alpha = search_scales([m.weight for m in linears], [specs[n] for n in names], st)
        s = s.to(linears[0].weight.device)
        prev.weight.div_(s.view(-1, *([1] * (prev.weight.ndim - 1))).to(prev.weight.dtype))
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
        for m in linears:
            m.weight.mul_(s.to(m.weight.dtype))
        st.scale_inputs(s)
        chosen[prev_name] = alpha
        log.debug("AWQ %s -> %s: alpha %.2f", prev_name, names, alpha)
    return chosen
