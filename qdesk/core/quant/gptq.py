"""GPTQ (Frantar et al. 2022): quantize one column at a time and spread its
rounding error over the columns not yet quantized, weighted by the inverse
Hessian H = 2 X^T X of the layer's calibration inputs.

Groups: per-group parameters are chosen from the error-updated weights when the
group's first column is reached; with ``act_order`` they are chosen up front
from the original weights ("static groups"), so the stored codes keep the
natural column order and need no permutation index.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import GPTQConfig
from qdesk.core.quant.primitives import QuantizedWeight, qrange, scale_dtype_for
from qdesk.core.quant.rtn import column_mean_square, rtn_qparams


def inverse_hessian_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*mean(diag H)*I)^-1, float32 (in, in)."""
    h = h.clone()
    h.diagonal().add_(damp * h.diagonal().mean().clamp_min(1e-8))
    for extra in (0.0, 1e-3, 1e-2, 1e-1):
        if extra:
            h.diagonal().add_(extra * h.diagonal().mean())
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
    raise BadInput("GPTQ: the Hessian is not positive definite even with dampening 0.1")


def quantize_gptq(w: torch.Tensor, config: GPTQConfig, stats) -> QuantizedWeight:
    """w: (out, in); stats.hessian: (in, in) float32 sum of x x^T over calibration tokens."""
    h = stats.hessian.to(w.device, torch.float32)
    W = w.float().clone()
    out, n = W.shape
    g = config.group_size
    dead = h.diagonal() == 0
    h = h.clone()
    h[dead, dead] = 1.0
    W[:, dead] = 0.0
    cross = getattr(stats, "cross", None) if config.dense_targets else None
    if cross is not None:
        cross = cross.to(w.device, torch.float32).clone()
        cross[:, dead] = 0.0
    perm = None
    if config.act_order:
        perm = torch.argsort(h.diagonal(), descending=True)
        W, h = W[:, perm], h[perm][:, perm]
        if cross is not None:
            cross = cross[perm][:, perm]
    hinv = inverse_hessian_factor(h, config.damp)
    # Dense targets (GPTQv2): quantizing column i also moves the later columns by
    # w_i P[i, later], P = alpha (C U^T)_{strictly upper} U with C = sum (x_dense - x) x^T
    # and U the upper Cholesky factor of H^-1, so that W_q x tracks W x_dense.
    P = None
    if cross is not None:
        P = config.dense_alpha * ((cross @ hinv.t()).triu_(diagonal=1) @ hinv)

    sdt = scale_dtype_for(w.dtype)
    n_groups = 1 if g == -1 else n // g
    scale = torch.empty(out, n_groups, dtype=sdt, device=w.device)
    zero = None if config.symmetric else torch.empty(out, n_groups, dtype=torch.int8, device=w.device)
    static = g == -1 or perm is not None
    one_group = replace(config, group_size=-1)
    if static:  # parameters from the original weights, natural column order
        weight = column_mean_square(stats) if config.act_weighted else None
        s, z = rtn_qparams(w.float(), config, config.clip_search, weight)
        scale.copy_(s)
        if zero is not None:
            zero.copy_(z)
    qmin, qmax = qrange(config.bits)
    Q = torch.empty(out, n, dtype=torch.float32, device=w.device)
    # Blocks hold whole groups, so a group's parameters see its updated columns.
    block = config.block_size if g == -1 else g * max(1, config.block_size // g)
    cols = (perm if perm is not None else torch.arange(n)).tolist()
    s_f = z_f = None  # float32 copies of the current group's parameters
    current = -1
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = hinv[i1:i2, i1:i2]
        P1 = P[i1:i2, i1:i2] if P is not None else None
        diag = Hinv1.diagonal().tolist()
        for i in range(i2 - i1):
            col = cols[i1 + i]
            gi = 0 if g == -1 else col // g
            if not static and col % g == 0:
                s, z = rtn_qparams(W1[:, i : i + g], one_group, config.clip_search)
                scale[:, gi] = s[:, 0]
                if zero is not None:
                    zero[:, gi] = z[:, 0]
            if gi != current:
                s_f = scale[:, gi].float()
                z_f = zero[:, gi].float() if zero is not None else None
                current = gi
            wcol = W1[:, i]
            x = wcol / s_f
            if z_f is not None:
                x = x + z_f
            q = torch.round(x).clamp_(qmin, qmax)
            Q[:, i1 + i] = q
            deq = (q - z_f) * s_f if z_f is not None else q * s_f
            err = (wcol - deq) / diag[i]
            if P1 is not None:  # before the update: wcol is a view of W1
                W1[:, i:].addr_(wcol.clone(), P1[i, i:])
            W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1.0)
            Err1[:, i] = err
        W[:, i2:].addmm_(Err1, hinv[i1:i2, i2:], alpha=-1.0)
        if P is not None:  # W1's columns hold each one as it was quantized
            W[:, i2:].addmm_(W1, P[i1:i2, i2:])
    Q = Q.to(torch.int8)
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return QuantizedWeight(Q.contiguous(), scale, zero, config.bits, g)

