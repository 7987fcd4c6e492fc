"""The GPTQ checkpoint format (AutoGPTQ / GPTQModel "gptq" v1), from qdesk's codes.

Per quantized Linear ``N`` (out x in, b bits, pack factor pf = 32 / b)::

    N.qweight  int32 (in / pf, out)       codes u = q + 2^(b-1), packed along the
                                           input: u[o, i] at bits b*(i % pf) of
                                           qweight[i // pf, o], low bits first
    N.qzeros   int32 (groups, out / pf)   zero - 1 (v1 stores it so), packed along
                                           the output the same way
    N.scales   float16 (groups, out)
    N.g_idx    int32 (in,)                the group of each input column

    weight[o, i] = scales[g, o] * (u[o, i] - (qzeros[g, o] + 1)),  g = g_idx[i]

qdesk's symmetric codes have zero 2^(b-1), so this is q * scale: exact, but
for the float16 rounding of a bfloat16 scale. vLLM runs GPTQ only symmetric,
4 or 8 bits, group -1/32/64/128 and no act-order with groups; qdesk refuses
the rest with the reason and the format that works.
"""

from __future__ import annotations

import numpy as np

from qdesk.core.errors import BadInput

GPTQ_BITS = (4, 8)
GPTQ_GROUPS = (-1, 32, 64, 128)


def gptq_refusal(bits: int, group_size: int, symmetric: bool, float_zero: bool) -> str | None:
    """Why a layer format cannot be a vLLM-loadable GPTQ checkpoint, or None."""
    if not symmetric or float_zero:
        return ("it has a zero point (asymmetric): vLLM runs GPTQ symmetric only; "
                "--format compressed-tensors holds it (vLLM runs pack-quantized asymmetric "
                "W4A16), or --format gguf --type exact")
    if bits not in GPTQ_BITS:
        return (f"it is {bits}-bit: vLLM runs GPTQ at 4 or 8 bits only; --format "
                "compressed-tensors holds it (transformers loads it)")
    if group_size not in GPTQ_GROUPS:
        return (f"its group size is {group_size}: vLLM's GPTQ kernels take -1, 32, 64 or 128; "
                "--format compressed-tensors holds it")
    return None


def _pack(u: np.ndarray, bits: int) -> np.ndarray:
    """(n, m) unsigned codes -> (n / pf, m) int32, pf consecutive rows per word."""
    pf = 32 // bits
    n, m = u.shape
    if n % pf:
        raise BadInput(f"{n} is not a multiple of {pf}: the GPTQ packing needs whole words")
    words = np.zeros((n // pf, m), dtype=np.uint32)
    grouped = u.astype(np.uint32).reshape(n // pf, pf, m)
    for j in range(pf):
        words |= grouped[:, j, :] << np.uint32(bits * j)
    return words.view(np.int32)


def _unpack(words: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of ``_pack``: (n / pf, m) int32 -> (n, m) int64."""
    pf = 32 // bits
    w = words.view(np.uint32).astype(np.uint64)
    parts = [(w >> np.uint64(bits * j)) & np.uint64((1 << bits) - 1) for j in range(pf)]
    return np.stack(parts, axis=1).reshape(-1, words.shape[1]).astype(np.int64)


def gptq_tensors(q: np.ndarray, scale: np.ndarray, bits: int, group_size: int
                 ) -> tuple[dict[str, np.ndarray], int]:
    """qdesk symmetric codes q (out, in) int8 and scales (out, groups) float32 ->
    the four GPTQ tensors, and how many scales float16 could not hold exactly."""
    out, n = q.shape
    g = n if group_size == -1 else group_size
    half = 1 << (bits - 1)
    u = (q.astype(np.int16) + half).astype(np.uint32)  # (out, in)
    scales16 = scale.astype(np.float16)
    if not np.isfinite(scales16).all():
        raise BadInput("a scale overflows float16, which GPTQ stores scales in")
    inexact = int((scales16.astype(np.float32) != scale).sum())
    groups = scale.shape[1]
    zeros = np.full((groups, out), half - 1, dtype=np.uint32)  # v1: zero - 1
    return {
        "qweight": _pack(u.T, bits),
        "qzeros": _pack(zeros.T, bits).T.copy(),
        "scales": np.ascontiguousarray(scales16.T),
        "g_idx": (np.arange(n) // g).astype(np.int32),
    }, inexact


def gptq_dequantize(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray,
                    g_idx: np.ndarray, bits: int) -> np.ndarray:
    """The reference GPTQ v1 dequantizer (GPTQModel's rule): (out, in) float32."""
    u = _unpack(qweight, bits)  # (in, out)
    z = _unpack(np.ascontiguousarray(qzeros.T), bits).T + 1  # (groups, out)
    s = scales.astype(np.float32)
    g = g_idx.astype(np.int64)
    return ((u - z[g]).astype(np.float32) * s[g]).T.copy()


def quantization_config(bits: int, group_size: int) -> dict:
    """What GPTQModel writes as quantize_config.json / config.json's quantization_config."""
    from qdesk import __version__

    return {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "desc_act": False,
        "sym": True,
        "static_groups": False,
        "true_sequential": True,
        "lm_head": False,
        "damp_percent": 0.01,
        "checkpoint_format": "gptq",
        "meta": {"quantizer": [f"qdesk:{__version__}"]},
    }
