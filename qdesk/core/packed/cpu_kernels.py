"""How a quantized Linear multiplies on the CPU, exactly: three implementations.

Every one computes y = x W^T with W = (q - zero) * scale, the checkpoint's own
weight, never an approximation of it:

``Int4Planes`` — torch's ``_weight_int4pack_mm_for_cpu`` (tinygemm). Its
  convention is w = (u - 8) * s + z per group, u in [0, 15], with s and z in the
  activation dtype and the product formed in float32. qdesk keeps z = 0 in the
  op, so each weight is (u - 8) * s, exact in float32 (a 4-bit integer times a
  16-bit scale), and adds the checkpoint's zero point outside the op: per group
  g a constant c_g = -zero_g * scale_g (exact in float32: a small integer, or a
  16-bit float, times a 16-bit scale), contributing sum_g (sum_{k in g} x_k) c_g
  — one small (M, groups) x (groups, N) product. Codes of 2-4 bits fit u
  directly (u = q + 8); 5-8-bit codes are split into two 4-bit planes,
  q + 2^(b-1) = 16 h + l, each plane one op call with scales 16 s and s (both
  exact: a power of two apart), the rest a group constant. The op wants group
  sizes 32-256; a checkpoint group that is a multiple of one of them repeats its
  scale over the op's smaller groups (exact). Its output is rounded to the
  activation dtype, the one rounding a dense product in that dtype makes too.
``Int8Channel`` — ``_weight_int8pack_mm`` (8-bit, one scale per output row):
  y = (x q^T) s in float32, plus -zero * s times each row's sum of x.
``DenseWeight`` — the dequantized weight kept in the activation dtype (the
  fallback: other group sizes, a dtype the ops are slow in).

The ops are fast for a few rows (decode, a batch of panes) and slow for many
(tinygemm has no blocked GEMM: its time grows with the rows, 14x a bfloat16
matmul at 512 rows); from ``DENSE_FROM_ROWS`` rows on, ``Int4Planes`` and
``Int8Channel`` dequantize to the activation dtype and use the ordinary matmul
(prefill, scoring). Measured crossover on this 2-vCPU machine, one thread,
2048 -> 8192: the op at 8 rows 9.3 ms (about 1.1 ms a row), dequantize + matmul
149 ms at 128 rows, so about 128 rows.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

from qdesk.core.packed.int4_layout import native_layout, row_multiple, torch_pack
from qdesk.core.quant.primitives import QuantizedWeight

OP_GROUPS = (256, 128, 64, 32)  # what _weight_int4pack_mm_for_cpu takes, largest first
DENSE_FROM_ROWS = 128  # see the module docstring; bench_speed.py measures both sides


_local = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """A reusable tensor of this thread's, grown to the largest size asked (prefill
    of the widest layer: about 7 bytes per weight of that one layer)."""
    n = 1
    for d in shape:
        n *= d
    key = (name, dtype, str(device))
    buf = getattr(_local, "buffers", None)
    if buf is None:
        buf = _local.buffers = {}
    have = buf.get(key)
    if have is None or have.numel() < n:
        with torch.inference_mode(False):  # usable in and out of inference mode
            have = buf[key] = torch.empty(n, dtype=dtype, device=device)
    return have[:n].view(shape)


class NotExact(ValueError):
    """The implementation cannot hold this checkpoint exactly (the caller falls back)."""


def op_group(in_features: int, group_size: int) -> int | None:
    """The largest group the int4 op takes that divides the checkpoint's group
    (or the whole row, per-channel), or None."""
    span = in_features if group_size == -1 else group_size
    return next((g for g in OP_GROUPS if span % g == 0 and in_features % g == 0), None)


def _exactly(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out = t.to(dtype)
    if not torch.equal(out.to(torch.float64), t.to(torch.float64)):
        raise NotExact(f"{t.dtype} values are not exact in {dtype}")
    return out


def _group_constant(qw: QuantizedWeight, shift: int) -> torch.Tensor | None:
    """(out, groups) c = (shift - zero) * scale in float32 (float64 where float32
    cannot hold it exactly), or None when it is zero everywhere."""
    zero = qw.zero.to(torch.float64) if qw.zero is not None else 0.0
    c = (shift - zero) * qw.scale.to(torch.float64)
    if not torch.is_tensor(c) or not bool(c.any()):
        return None
    c32 = c.to(torch.float32)
    return c32 if torch.equal(c32.to(torch.float64), c) else c


class Int4Planes(nn.Module):
    """torch's CPU int4 op, one plane (2-4 bits) or two (5-8 bits); see the module docstring.

    Buffers: ``plane{i}`` uint8 (N', K/2) in torch's layout, N' = N padded to
    whole blocks; ``scale{i}`` (K/g, N', 2) [scale, 0] in the activation dtype;
    ``constant`` (N, groups) float32 or float64, or None.
    """

    name = "int4"

    def __init__(self, qw: QuantizedWeight, dtype: torch.dtype) -> None:
        super().__init__()
        n, k = qw.q.shape
        g = op_group(k, qw.group_size)
        if g is None:
            raise NotExact(f"group size {qw.group_size} at width {k} has no int4 op group")
        self.out_features, self.in_features, self.op_group = n, k, g
        self.checkpoint_group = k if qw.group_size == -1 else qw.group_size
        self.layout = native_layout()
        rows = -(-n // row_multiple()) * row_multiple()
        # per op group: the checkpoint scale repeated over the op groups it spans
        scale = qw.scale.repeat_interleave(self.checkpoint_group // g, dim=1)  # (N, K/g)
        v = qw.q.to(torch.int32) + (1 << (qw.bits - 1))  # unsigned code in [0, 2^bits)
        if qw.bits <= 4:
            planes = [(v + 8 - (1 << (qw.bits - 1)), scale, 1)]  # u = q + 8
            shift = 0
        else:
            planes = [(v >> 4, scale, 16), (v & 15, scale, 1)]  # v = 16 h + l
            shift = 136 - (1 << (qw.bits - 1))  # q = 16 (h - 8) + (l - 8) + shift
        self.n_planes = len(planes)
        for i, (u, s, mult) in enumerate(planes):
            u = F.pad(u, (0, 0, 0, rows - n), value=8)
            packed = self.layout.pack(u) if self.layout is not None else torch_pack(u)
            s = _exactly(F.pad(s.to(torch.float64) * mult, (0, 0, 0, rows - n)), dtype)
            sz = torch.stack([s.t(), torch.zeros_like(s.t())], dim=-1).contiguous()
            self.register_buffer(f"plane{i}", packed)
            self.register_buffer(f"scale{i}", sz)
        self.register_buffer("constant", _group_constant(qw, shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, K) in the activation dtype -> (M, N)."""
        if x.shape[0] >= DENSE_FROM_ROWS and self.layout is not None:
            return F.linear(x, self._dense(x.dtype, torch.float32))
        y = None
        for i in range(self.n_planes):
            part = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x, getattr(self, f"plane{i}"), self.op_group, getattr(self, f"scale{i}")
            )
            y = part if y is None else y.float() + part.float()
        if y.shape[1] != self.out_features:
            y = y[:, : self.out_features].contiguous()
        if self.constant is not None:
            sums = x.to(self.constant.dtype).reshape(x.shape[0], -1, self.checkpoint_group).sum(-1)
            y = y.to(self.constant.dtype) + sums @ self.constant.t()
        return y.to(x.dtype)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (N, K), formed in float64 (exact) and rounded once to ``dtype``."""
        return self._dense(dtype, torch.float64).clone()  # not the reused workspace

    def _dense(self, dtype: torch.dtype, work: torch.dtype) -> torch.Tensor:
        """The weight (N, K) formed in ``work`` precision, as a transposed view of
        a contiguous (K, N') tensor (what a matmul reads fastest). float32 is
        exact for integer zero points (each term a small integer times a 16-bit
        scale); with a float zero the sum may round once at float32 (2^-24),
        far below any 16-bit activation dtype; the one rounding to ``dtype`` is
        the one a dense load makes.

        The intermediate tensors live in a per-thread workspace reused from call
        to call: fresh ones of this size are fresh pages, and the kernel's
        zeroing of them cost more than the arithmetic (measured: a uint8 to
        float32 conversion 152 ms into a new tensor, 35 ms into a reused one,
        16.7 M weights, one thread)."""
        if self.layout is None:
            raise NotExact("torch's int4 layout on this CPU is unknown: cannot unpack")
        blocks, b, k = self.plane0.shape[0] // self.layout.block, self.layout.block, self.in_features
        rows, device = blocks * b, self.plane0.device
        # The codes are transposed while still one byte each: unpacked straight
        # into a (K, N') buffer, so the float work below runs on contiguous rows.
        codes = _workspace("codes", (k, rows), torch.uint8, device)
        w = _workspace("w", (k, rows), work, device)
        part = _workspace("part", (k, rows), work, device) if self.n_planes > 1 else w
        for i in range(self.n_planes):
            out = w if i == 0 else part
            self.layout.unpack_blocked_into(getattr(self, f"plane{i}"),
                                            codes.view(k, blocks, b).permute(1, 0, 2))
            s = getattr(self, f"scale{i}")[:, :, 0].to(work).unsqueeze(1)  # (K/g, 1, N')
            out.copy_(codes).sub_(8).view(-1, self.op_group, rows).mul_(s)
            if i:
                w.add_(part)
        if self.constant is not None:
            c = F.pad(self.constant.t().to(work), (0, rows - self.out_features))  # (G, N')
            w.view(-1, self.checkpoint_group, rows).add_(c.unsqueeze(1))
        wt = _workspace("wt", (k, rows), dtype, device)
        wt.copy_(w)
        return wt[:, : self.out_features].t()


class Int8Channel(nn.Module):
    """torch's ``_weight_int8pack_mm``: per-channel codes of up to 8 bits.

    Buffers: ``codes`` int8 (N, K); ``scale`` (N,) in the activation dtype;
    ``constant`` (N,) float32 (-zero * scale) or None.
    """

    name = "int8"

    def __init__(self, qw: QuantizedWeight, dtype: torch.dtype) -> None:
        super().__init__()
        n, k = qw.q.shape
        if qw.group_size not in (-1, k):
            raise NotExact("the int8 op takes one scale per output row")
        if k % 32:
            # measured: torch 2.13's bfloat16 kernel crashes (SIGSEGV) when K % 16 != 0
            raise NotExact(f"the int8 op needs a width divisible by 32, not {k}")
        self.out_features, self.in_features = n, k
        self.register_buffer("codes", qw.q.to(torch.int8).contiguous())
        self.register_buffer("scale", _exactly(qw.scale.reshape(n), dtype))
        c = _group_constant(qw, 0)
        self.register_buffer("constant", None if c is None else c.reshape(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= DENSE_FROM_ROWS:
            w = self.codes.to(torch.float32) * self.scale.to(torch.float32).unsqueeze(1)
            if self.constant is not None:
                w = w + self.constant.to(torch.float32).unsqueeze(1)
            return F.linear(x, w.to(x.dtype))
        y = torch.ops.aten._weight_int8pack_mm(x, self.codes, self.scale)
        if self.constant is not None:
            c = self.constant
            y = (y.to(c.dtype) + x.to(c.dtype).sum(-1, keepdim=True) * c).to(x.dtype)
        return y

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        w = self.codes.to(torch.float64) * self.scale.to(torch.float64).unsqueeze(1)
        if self.constant is not None:
            w = w + self.constant.to(torch.float64).unsqueeze(1)
        return w.to(dtype)


class DenseWeight(nn.Module):
    """The dequantized weight, kept (N, K) in the activation dtype: the fallback."""

    name = "dense"

    def __init__(self, qw: QuantizedWeight, dtype: torch.dtype) -> None:
        super().__init__()
        self.out_features, self.in_features = qw.q.shape
        self.register_buffer("weight", qw.dequantize(torch.float64).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.weight.to(dtype)
