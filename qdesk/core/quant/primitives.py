"""Affine integer quantization of a 2-D weight, grouped along the input axis.

Conventions (those of compressed-tensors, so the checkpoint needs no conversion):
- weight ``w``: (out, in); ``group_size`` divides ``in`` (``-1`` = one group per row).
- integers are signed: ``q`` in [-2^(b-1), 2^(b-1) - 1], stored as int8.
- symmetric grid ("full", the default): the signed value of largest magnitude in
  a group maps to -2^(b-1), scale = that value / -2^(b-1) (llama.cpp's Q4_0 and
  auto-round's choice), so all 2^b codes are used; the scale is negative when
  that value is positive. ``narrow=True`` is the older grid: scale = max|w| /
  (2^(b-1) - 1) > 0, codes -(2^(b-1) - 1)..2^(b-1) - 1, one level unused.
- ``scale``: (out, n_groups) in a 16-bit float (the storage dtype); ``zero``: int8
  (out, n_groups) for asymmetric, ``None`` for symmetric, or (HQQ's float zero)
  the same 16-bit dtype as the scale.
- dequantized = (q - zero) * scale computed in float32, where the product of an
  integer |q - zero| <= 255 and a 16-bit scale is exact, then cast to the weight
  dtype: one rounding, so it equals what compressed-tensors computes in the
  weight's dtype (16-bit or float32). A float zero makes q - zero inexact in a
  16-bit dtype, so that case computes step by step in the weight's dtype, as
  compressed-tensors does (``dequantize_float_zero``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def qrange(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def n_groups(in_features: int, group_size: int) -> int:
    return 1 if group_size == -1 else in_features // group_size


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """(out, in) -> (out, n_groups, g) view in float32."""
    out, inp = w.shape
    g = inp if group_size == -1 else group_size
    return w.float().reshape(out, inp // g, g)


def scale_dtype_for(weight_dtype: torch.dtype) -> torch.dtype:
    """16-bit scales: float16 for a float16 model, bfloat16 otherwise."""
    return torch.float16 if weight_dtype == torch.float16 else torch.bfloat16


def choose_qparams(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool,
    shrink: torch.Tensor | float = 1.0,
    scale_dtype: torch.dtype = torch.bfloat16,
    narrow: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min-max scale (and integer zero) per group; ``shrink`` (scalar or
    (out, n_groups)) narrows the range before rounding (clipping search).
    ``narrow``: the older symmetric grid (see the module doc)."""
    qmin, qmax = qrange(bits)
    wg = _grouped(w, group_size)
    shrink = torch.as_tensor(shrink, dtype=torch.float32, device=w.device)
    if symmetric and narrow:
        # The largest magnitude maps to qmax, so no value clips and one code is unused.
        amax = wg.abs().amax(dim=-1) * shrink
        scale = (amax / qmax).clamp_min(1e-8).to(scale_dtype)
        return scale, None
    if symmetric:
        return signed_max_scale(wg, bits, shrink, scale_dtype), None
    lo = (wg.amin(dim=-1) * shrink).clamp_max(0.0)
    hi = (wg.amax(dim=-1) * shrink).clamp_min(0.0)
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(1e-8).to(scale_dtype)
    zero = torch.round(qmin - lo / scale.float()).clamp(qmin, qmax).to(torch.int8)
    return scale, zero


def signed_max_scale(wg: torch.Tensor, bits: int, shrink, scale_dtype: torch.dtype
                     ) -> torch.Tensor:
    """Full symmetric grid: wg (out, n_groups, g) float32 -> scale (out, n_groups)
    = (the signed value of largest magnitude) * shrink / -2^(b-1). That value codes
    to exactly -2^(b-1); the opposite side reaches 2^(b-1) - 1 (a value beyond it
    by less than half a step clips by at most that much, as in Q4_0)."""
    qmin = qrange(bits)[0]
    idx = wg.abs().argmax(dim=-1, keepdim=True)
    vmax = wg.gather(-1, idx).squeeze(-1) * shrink
    scale = vmax / qmin
    # An all-zero group: any positive scale codes it to 0.
    scale = torch.where(scale.abs() < 1e-8, torch.full_like(scale, 1e-8), scale)
    return scale.to(scale_dtype)


def quantize(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, group_size: int
) -> torch.Tensor:
    """Round ``w`` (out, in) to int8 codes with the given per-group parameters."""
    qmin, qmax = qrange(bits)
    wg = _grouped(w, group_size)
    x = wg / scale.float().unsqueeze(-1)
    if zero is not None:
        x = x + zero.float().unsqueeze(-1)
    return torch.round(x).clamp(qmin, qmax).to(torch.int8).reshape(w.shape)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    group_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    out, inp = q.shape
    g = inp if group_size == -1 else group_size
    qg = q.reshape(out, inp // g, g).float()
    if zero is not None:
        qg = qg - zero.float().unsqueeze(-1)
    return (qg * scale.float().unsqueeze(-1)).reshape(q.shape).to(dtype)


def dequantize_float_zero(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """(q - zero) * scale with each operation rounded to ``dtype``: compressed-tensors'
    own order of operations, so a loader computes the very same weight. In float32
    both steps are exact (a 16-bit zero and scale have 8-11 significant bits)."""
    out, inp = q.shape
    g = inp if group_size == -1 else group_size
    qg = q.reshape(out, inp // g, g).to(dtype)
    return ((qg - zero.to(dtype).unsqueeze(-1)) * scale.to(dtype).unsqueeze(-1)).reshape(q.shape)


def fake_quantize(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, group_size: int
) -> torch.Tensor:
    """Quantize then dequantize in float32 (for searches; not bit-equal to ``dequantize``
    in 16-bit arithmetic)."""
    qmin, qmax = qrange(bits)
    wg = _grouped(w, group_size)
    s = scale.float().unsqueeze(-1)
    z = 0.0 if zero is None else zero.float().unsqueeze(-1)
    return ((torch.round(wg / s + z).clamp(qmin, qmax) - z) * s).reshape(w.shape)


@dataclass(frozen=True)
class QuantizedWeight:
    """One quantized Linear weight: codes, parameters and the format facts."""

    q: torch.Tensor  # int8 (out, in)
    scale: torch.Tensor  # 16-bit float (out, n_groups)
    zero: torch.Tensor | None  # int8 or 16-bit float (out, n_groups); None (symmetric)
    bits: int
    group_size: int  # -1 = per output channel

    @property
    def symmetric(self) -> bool:
        return self.zero is None

    @property
    def float_zero(self) -> bool:
        return self.zero is not None and self.zero.is_floating_point()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.float_zero:
            return dequantize_float_zero(self.q, self.scale, self.zero, self.group_size, dtype)
        return dequantize(self.q, self.scale, self.zero, self.group_size, dtype)

    def zero_bits(self) -> int:
        """Bits of one zero: ``bits`` for an integer zero, 16 for a float one."""
        if self.zero is None:
            return 0
        return 8 * self.zero.element_size() if self.float_zero else self.bits

    def storage_bits(self) -> int:
        """Bits of the quantized format: codes, 16-bit scales and zeros (see zero_bits)."""
        groups = self.scale.numel()
        per_group = 8 * self.scale.element_size() + self.zero_bits()
        return self.q.numel() * self.bits + groups * per_group


def mse_shrink(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool,
    scale_dtype: torch.dtype,
    grid: int = 10,
    max_shrink: float = 0.2,
    narrow: bool = False,
    column_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-group range shrink that minimises the squared rounding error |w - Q(w)|^2
    (the clipping search of GPTQ's reference code and llm-compressor's mse observer).
    ``column_weight`` (in,): weight each input column's error, sum_j c_j d_ij^2, e.g.
    by the calibration inputs' mean square (activation-weighted rounding)."""
    wg = _grouped(w, group_size)
    cw = None if column_weight is None else column_weight.float().to(w.device).reshape(
        1, wg.shape[1], wg.shape[2])
    best = torch.full(wg.shape[:2], float("inf"), device=w.device)
    best_shrink = torch.ones(wg.shape[:2], device=w.device)
    for i in range(grid + 1):
        p = 1.0 - max_shrink * i / grid
        scale, zero = choose_qparams(w, bits, group_size, symmetric, p, scale_dtype, narrow)
        x = wg / scale.float().unsqueeze(-1)
        if zero is not None:
            x = x + zero.float().unsqueeze(-1)
        q = torch.round(x).clamp(*qrange(bits))
        if zero is not None:
            q = q - zero.float().unsqueeze(-1)
        d = q * scale.float().unsqueeze(-1) - wg
        err = (d * d).sum(-1) if cw is None else (d * d * cw).sum(-1)
        better = err < best
        best = torch.where(better, err, best)
        best_shrink = torch.where(better, torch.full_like(best_shrink, p), best_shrink)
    return best_shrink


def output_shrink(
    w: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool,
    scale_dtype: torch.dtype,
    hessian: torch.Tensor,
    grid: int = 10,
    max_shrink: float = 0.2,
    narrow: bool = False,
) -> torch.Tensor:
    """Per-group range shrink that minimises the group's share of the *output*
    error d^T H_gg d (H = sum x x^T over calibration inputs, H_gg its diagonal
    block for the group; cross-group terms ignored), as AWQ's clipping search
    does with sampled outputs. w: (out, in); hessian: (in, in) float32."""
    wg = _grouped(w, group_size)
    out, ng, g = wg.shape
    hb = hessian.float().reshape(ng, g, ng, g).diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    best = torch.full((out, ng), float("inf"), device=w.device)
    best_shrink = torch.ones(out, ng, device=w.device)
    qmin, qmax = qrange(bits)
    for i in range(grid + 1):
        p = 1.0 - max_shrink * i / grid
        scale, zero = choose_qparams(w, bits, group_size, symmetric, p, scale_dtype, narrow)
        s = scale.float().unsqueeze(-1)
        z = 0.0 if zero is None else zero.float().unsqueeze(-1)
        d = (torch.round(wg / s + z).clamp(qmin, qmax) - z) * s - wg
        err = (torch.einsum("ong,ngh->onh", d, hb) * d).sum(-1)
        better = err < best
        best = torch.where(better, err, best)
        best_shrink = torch.where(better, torch.full_like(best_shrink, p), best_shrink)
    return best_shrink
