"""HQQ (Badri & Shaji 2023): calibration-free. With the scale fixed at min-max,
alternate (1) rounding, (2) a sparsity-promoting lp shrinkage of the residual
(p < 1) and (3) a closed-form update of the zero, keeping the best iterate.

compressed-tensors stores integer zeros, so the optimised float zero is rounded
and the scale refitted by least squares with codes and zero fixed (two rounds).
"""

from __future__ import annotations

import torch

from qdesk.core.quant.configs import HQQConfig
from qdesk.core.quant.primitives import (
    QuantizedWeight,
    choose_qparams,
    qrange,
    quantize,
    scale_dtype_for,
)


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    return torch.sign(x) * torch.relu(x.abs() - (1.0 / beta) * x.abs().clamp_min(1e-12).pow(p - 1))


def quantize_hqq(w: torch.Tensor, config: HQQConfig, stats=None) -> QuantizedWeight:
    """w: (out, in) -> codes with an optimised zero and refitted scale."""
    qmin, qmax = qrange(config.bits)
    out, n = w.shape
    g = n if config.group_size == -1 else config.group_size
    wg = w.float().reshape(out, n // g, g)
    sdt = scale_dtype_for(w.dtype)
    scale0, _ = choose_qparams(w, config.bits, config.group_size, False, 1.0, torch.float32)
    s = scale0.float().unsqueeze(-1)
    z = qmin - wg.amin(-1, keepdim=True) / s  # float zero
    beta = config.beta
    best_err = torch.full(z.shape, float("inf"), device=w.device)
    best_z = z.clone()
    for _ in range(config.iters):
        q = torch.round(wg / s + z).clamp(qmin, qmax)
        wr = (q - z) * s
        we = _shrink_lp(wg - wr, beta, config.lp_norm)
        z = (q - (wg - we) / s).mean(-1, keepdim=True)
        beta *= config.kappa
        err = (wg - (torch.round(wg / s + z).clamp(qmin, qmax) - z) * s).abs().mean(-1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_z = torch.where(better, z, best_z)
    zi = torch.round(best_z).clamp(qmin, qmax)
    for _ in range(2):  # least-squares scale with the integer zero fixed
        q = torch.round(wg / s + zi).clamp(qmin, qmax)
        d = q - zi
        s_new = (d * wg).sum(-1, keepdim=True) / (d * d).sum(-1, keepdim=True).clamp_min(1e-12)
        s = torch.where(s_new > 0, s_new, s)
    scale = s.squeeze(-1).to(sdt).clamp_min(torch.finfo(sdt).tiny)
    zero = zi.squeeze(-1).to(torch.int8)
    q = quantize(w, scale, zero, config.bits, config.group_size)
    return QuantizedWeight(q, scale, zero, config.bits, config.group_size)
