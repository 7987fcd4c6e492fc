"""Triton kernels for weight-only quantized Linears (2/3/4/8-bit codes, 16-bit activations).

Two kernels over the layout of ``packing`` (its docstring draws it), one launcher:

``_gemv_kernel`` — a few rows (decode): one program per (block of outputs, row,
  slice of groups); each group's scale and zero are read once, the group's
  x . q is summed in float32 registers and scaled once. Slices of groups
  ("split-K") keep every SM busy when N / BLOCK_N alone is too few programs;
  their float32 partial sums are added by one torch reduction (a fixed order:
  the result does not depend on scheduling).
``_gemm_kernel`` — many rows (prefill): (BLOCK_M x BLOCK_N) tiles, ``tl.dot`` of
  the activation tile with the integer codes in the activation dtype (exact:
  |q| <= 128), float32 accumulation, scaled per group.

``wq_linear`` checks shapes, dtypes, contiguity and divisibility before any
launch and picks the kernel. Under ``TRITON_INTERPRET=1`` (CPU tests) the dot
runs on float32 tiles: the interpreter multiplies bfloat16 bit patterns in
``tl.dot`` (triton-lang/triton#11584), and float32 tiles of these exact
integers give the same sums.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from qdesk_kernels.packing import PackedWeight

GEMV_MAX_ROWS = 8  # up to this many rows: the GEMV kernel (decode, a batch of panes)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, part_ptr, M, N, K, stride_xm, groups_per_split,
                 GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 SBITS: tl.constexpr, HAS_ZERO: tl.constexpr):
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    split = tl.program_id(2)
    PER: tl.constexpr = 32 // SBITS
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    mask_n = offs_n < N
    g_start = split * groups_per_split
    g_end = tl.minimum(g_start + groups_per_split, K // GROUP)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for g in range(g_start, g_end):
        part = tl.zeros((BLOCK_N,), dtype=tl.float32)
        xs = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for kk in range(0, GROUP, BLOCK_K):
            offs_k = g * GROUP + kk + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + m * stride_xm + offs_k).to(tl.float32)
            words = tl.load(w_ptr + (offs_k // PER)[:, None] * N + offs_n[None, :],
                            mask=mask_n[None, :], other=0)
            q = ((words >> ((offs_k % PER) * SBITS)[:, None]) & ((1 << SBITS) - 1)) \
                - (1 << (SBITS - 1))
            part += tl.sum(x[:, None] * q.to(tl.float32), axis=0)
            if HAS_ZERO:
                xs += x
        if HAS_ZERO:
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0)
            part -= z * tl.sum(xs, axis=0)
        s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc += part * s
    tl.store(part_ptr + (split * M + m) * N + offs_n, acc, mask=mask_n)


@triton.jit
def _gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, y_ptr, M, N, K, stride_xm, stride_ym,
                 GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, SBITS: tl.constexpr, HAS_ZERO: tl.constexpr,
                 DOT_F32: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    PER: tl.constexpr = 32 // SBITS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.max_contiguous(tl.multiple_of(offs_n, BLOCK_N), BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g in range(0, K // GROUP):
        part = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        xs = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for kk in range(0, GROUP, BLOCK_K):
            offs_k = g * GROUP + kk + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                        mask=mask_m[:, None], other=0.0)
            words = tl.load(w_ptr + (offs_k // PER)[:, None] * N + offs_n[None, :],
                            mask=mask_n[None, :], other=0)
            q = ((words >> ((offs_k % PER) * SBITS)[:, None]) & ((1 << SBITS) - 1)) \
                - (1 << (SBITS - 1))
            if DOT_F32:
                part += tl.dot(x.to(tl.float32), q.to(tl.float32), input_precision="ieee")
            else:
                part += tl.dot(x, q.to(x.dtype))
            if HAS_ZERO:
                xs += tl.sum(x.to(tl.float32), axis=1)
        if HAS_ZERO:
            z = tl.load(z_ptr + g * N + offs_n, mask=mask_n, other=0.0)
            part -= xs[:, None] * z[None, :]
        s = tl.load(s_ptr + g * N + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc += part * s[None, :]
    y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], y,
             mask=mask_m[:, None] & mask_n[None, :])


def _block_k(group: int, cap: int) -> int:
    """The largest power of two <= cap dividing the group (a K tile never spans two groups)."""
    b = cap
    while b >= 16 and group % b:
        b //= 2
    if b < 16:
        raise ValueError(f"group {group} has no power-of-two tile of 16 or more")
    return b


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def check_supported(w: PackedWeight) -> None:
    """Raise ValueError when the kernels cannot take this weight."""
    _block_k(w.group, 128)
    if w.in_features % w.per_word or w.in_features % w.group:
        raise ValueError(f"width {w.in_features} does not fit groups of {w.group}")


def wq_linear(x: torch.Tensor, w: PackedWeight, block_n: int | None = None,
              split: int | None = None) -> torch.Tensor:
    """y (M, N) = x (M, K) W^T in x's dtype (bfloat16 or float16; float32 only
    under the interpreter). ``block_n``/``split`` override the GEMV's choices."""
    if x.ndim != 2 or x.shape[1] != w.in_features:
        raise ValueError(f"x must be (M, {w.in_features}), not {tuple(x.shape)}")
    allowed = (torch.bfloat16, torch.float16) + ((torch.float32,) if interpreting() else ())
    if x.dtype not in allowed:
        raise ValueError(f"activations must be bfloat16 or float16, not {x.dtype}")
    if not x.is_contiguous():
        x = x.contiguous()
    if x.device != w.words.device:
        raise ValueError(f"x is on {x.device}, the weight on {w.words.device}")
    check_supported(w)
    m, n, k = x.shape[0], w.out_features, w.in_features
    zeros = w.zeros if w.zeros is not None else w.scales  # a dummy pointer when absent
    if m <= GEMV_MAX_ROWS:
        bn = block_n or (64 if n <= 2048 else 128)
        bk = _block_k(w.group, 128)
        n_groups = k // w.group
        n_blocks = triton.cdiv(n, bn)
        want = split or max(1, min(n_groups, (4 * _sm_count(x.device)) // (n_blocks * m)))
        per_split = triton.cdiv(n_groups, want)
        splits = triton.cdiv(n_groups, per_split)
        parts = torch.empty(splits, m, n, device=x.device, dtype=torch.float32)
        _gemv_kernel[(n_blocks, m, splits)](
            x, w.words, w.scales, zeros, parts, m, n, k, x.stride(0), per_split,
            GROUP=w.group, BLOCK_N=bn, BLOCK_K=bk, SBITS=w.sbits, HAS_ZERO=w.zeros is not None,
        )
        return (parts[0] if splits == 1 else parts.sum(0)).to(x.dtype)
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    bm, bn, bk = (16, 32, _block_k(w.group, 32)) if interpreting() else (64, 64, _block_k(w.group, 64))
    _gemm_kernel[(triton.cdiv(m, bm), triton.cdiv(n, bn))](
        x, w.words, w.scales, zeros, y, m, n, k, x.stride(0), y.stride(0),
        GROUP=w.group, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SBITS=w.sbits,
        HAS_ZERO=w.zeros is not None, DOT_F32=interpreting(),
    )
    return y
