"""Linear layers on qdesk's own CPU kernels (``qdesk_kernels/cpu/qdesk_cpu.c``), in float32.

``NativeCodes`` keeps a quantized Linear's codes at 4 bits (2-4-bit codes) or 8
bits (5-8-bit codes) and its scales in the checkpoint's 16-bit dtype, and
multiplies with the exact weight: w = s * (u - o - zero), float32 sums.
``Dense16Linear`` is an unquantized Linear whose 16-bit checkpoint weight stays
16-bit while the model computes in float32 (the output head: a fifth of the
demo's weights, and tied to the embedding, which ``keep_embedding_16bit`` keeps
in 16 bits too). Both take float32 activations (others are converted) and
return the input's dtype.

A decode step is a few rows: the kernel. From ``DENSE_FROM_ROWS`` rows on (a
prefill, scoring), the weight is formed in float32 once per call and goes
through torch's matmul, which reuses each weight for many rows.

Opt-in, per model (``use_int8_activations``): a decode step's single row is
rounded to int8 per block of 64 columns and multiplied with integer dot
products, as llama.cpp does on the CPU. Several times fewer instructions per
weight, but the product is no longer the checkpoint's exact one (the rounding
of x, at most half a step of 1/127 of each block's largest value, is the whole
difference); prefills and scoring (several rows) stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from qdesk.core.packed import native
from qdesk.core.packed.cpu_kernels import NotExact, _workspace
from qdesk.core.quant.primitives import QuantizedWeight

# Rows from which forming the weight and a dense matmul beat the kernel (whose
# time grows with the rows). Measured on a 2-core AVX2 CPU (AMD EPYC), two
# threads: 576 -> 1536 kernel 0.98 ms / dense 1.55 ms at 48 rows, 1.91 / 1.74 at
# 64; 2048 -> 8192 21.5 / 28.3 ms at 48, 53 / 49 at 128.
DENSE_FROM_ROWS = 64
_KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_F32 = torch.float32


def _lib():
    lib = native.library()
    if lib is None:
        raise NotExact(f"qdesk's CPU kernels are not available: {native.why_not()}")
    return lib


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def pack_nibbles(u: torch.Tensor) -> torch.Tensor:
    """uint8 values in [0, 15], (N, K) with K % 16 == 0 -> uint8 (N, K/2): per
    block of 16 columns, byte j holds column j (low nibble) and j + 8 (high)."""
    n, k = u.shape
    t = u.to(torch.uint8).reshape(n, k // 16, 2, 8)
    return (t[:, :, 0] | (t[:, :, 1] << 4)).reshape(n, k // 2).contiguous()


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    n, half = packed.shape
    t = packed.reshape(n, half // 8, 1, 8)
    return torch.cat([t & 15, t >> 4], dim=2).reshape(n, 2 * half)


def _scale_storage(scale: torch.Tensor) -> torch.Tensor:
    """The scales as the kernel reads them: 16-bit ones as they are, others in
    float32 (refused where float32 would round them)."""
    if scale.dtype in (torch.bfloat16, torch.float16):
        return scale.contiguous()
    s32 = scale.to(torch.float32)
    if not torch.equal(s32.to(torch.float64), scale.to(torch.float64)):
        raise NotExact(f"{scale.dtype} scales are not exact in float32")
    return s32.contiguous()


def _threads() -> int:
    return torch.get_num_threads()


class NativeCodes(nn.Module):
    """A quantized Linear's weight on qdesk's CPU kernel (see the module docstring).

    Buffers: ``codes`` uint8 (N, K/2) nibbles (q + 2^(b-1)) or (N, K) bytes (q as int8); ``scale`` (N, G)
    in its stored dtype; ``zero`` float32 (N, G) or None (symmetric).
    """

    name = "native"

    def __init__(self, qw: QuantizedWeight, dtype: torch.dtype) -> None:
        super().__init__()
        self.lib = _lib()
        n, k = qw.q.shape
        g = k if qw.group_size == -1 else qw.group_size
        if k % 16 or g % 16 or k % g:
            raise NotExact(f"the kernel needs widths and groups divisible by 16 ({k}, group {g})")
        self.out_features, self.in_features, self.group = n, k, g
        # Nibbles hold q + 2^(b-1) (unsigned), bytes hold q itself (signed): the
        # offset the kernel takes back out is no larger than the codes, so its
        # share of the float32 sum cancels no more than they do.
        self.code_bits = 4 if qw.bits <= 4 else 8
        offset = 1 << (qw.bits - 1) if self.code_bits == 4 else 0
        self.offset = float(offset)
        q = qw.q.to(torch.int16)
        self.register_buffer("codes", pack_nibbles(q + offset) if self.code_bits == 4
                             else q.to(torch.int8).view(torch.uint8).contiguous())
        scale = qw.scale.reshape(n, k // g)
        self.register_buffer("scale", _scale_storage(scale))
        zero = None
        if qw.zero is not None and bool(qw.zero.any()):
            z = qw.zero.reshape(n, k // g).to(torch.float64)
            if not torch.equal(z, z.round()):
                raise NotExact("a float zero point (the kernel takes integer zeros)")
            # c = -(o + zero) * s must be exact in float32 (see qdesk_cpu.c)
            c = -(offset + z) * scale.to(torch.float64)
            if not torch.equal(c.to(torch.float32).to(torch.float64), c):
                raise NotExact("the group constants are not exact in float32")
            zero = z.to(torch.float32).contiguous()
        self.register_buffer("zero", zero)
        self.int8_activations = False
        self._bind()

    @property
    def takes_int8_activations(self) -> bool:
        """Whether the int8-activation step applies: 4-bit codes (2-4-bit
        weights) in groups of a multiple of 64 columns (the kernel's blocks)."""
        return self.code_bits == 4 and self.group % 64 == 0

    @property
    def int8_activations(self) -> bool:
        """Whether a decode step rounds its row to int8 (the module docstring)."""
        return self._gemm is self.lib.qd_gemm_codes_q8

    @int8_activations.setter
    def int8_activations(self, on: bool) -> None:
        self._gemm = self.lib.qd_gemm_codes_q8 if on else self.lib.qd_gemm_codes

    # The kernel reads the buffers through raw pointers taken in _bind: whatever
    # replaces a buffer (a dtype conversion, a new tensor) must bind again, or
    # the kernel would read freed memory.
    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._bind()
        return out

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        super().register_buffer(name, tensor, persistent)
        if "_fixed" in self.__dict__:
            self._bind()

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in self._BOUND and "_fixed" in self.__dict__:
            self._bind()

    _BOUND = frozenset(("codes", "scale", "zero"))

    def _bind(self) -> None:
        """The kernel call's fixed arguments, kept as plain attributes (a buffer
        is looked up through Module.__getattr__ on every use), and the scales'
        kind from their dtype as they are now."""
        zero = self._buffers.get("zero")
        scale, codes = self._buffers["scale"], self._buffers["codes"]
        if (scale.dtype not in _KINDS or codes.dtype != torch.uint8
                or (zero is not None and zero.dtype != torch.float32)):
            raise TypeError(f"qdesk's CPU kernel reads uint8 codes, {list(_KINDS)} scales and "
                            f"float32 zero points, not {codes.dtype}, {scale.dtype}, "
                            f"{None if zero is None else zero.dtype}")
        self.kind = _KINDS[scale.dtype]
        self._fixed = (self.code_bits, self._buffers["codes"].data_ptr(),
                       self._buffers["scale"].data_ptr(), self.kind, _ptr(zero), self.offset,
                       self.out_features, self.in_features, self.group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, K) -> (M, N) in x's dtype."""
        return self.run(x)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> (..., N) in x's dtype."""
        x32 = x if x.dtype is _F32 else x.to(_F32)
        if not x32.is_contiguous():
            x32 = x32.contiguous()
        m = x32.numel() // self.in_features
        if m >= DENSE_FROM_ROWS:
            y = F.linear(x32, self._dense())
        else:
            y = torch.empty(x32.shape[:-1] + (self.out_features,), dtype=_F32)
            self._gemm(*self._fixed, x32.data_ptr(), m, y.data_ptr(), torch.get_num_threads())
        return y if x.dtype is _F32 else y.to(x.dtype)

    def _dense(self) -> torch.Tensor:
        """The weight (N, K) in float32, in this thread's reused workspace."""
        w = _workspace("native", (self.out_features, self.in_features), torch.float32, "cpu")
        self.lib.qd_dequant_codes(*self._fixed, w.data_ptr(), _threads())
        return w

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._dense().to(dtype, copy=True)


class Dense16Linear(nn.Module):
    """An unquantized Linear whose bfloat16/float16 weight stays 16-bit in a
    float32 model: y = x W^T (+ b) in float32 with the weight's exact values.
    ``weight`` may be shared (a tied embedding)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.dtype not in (torch.bfloat16, torch.float16) or weight.dim() != 2:
            raise NotExact("a 16-bit (N, K) weight")
        if weight.shape[1] % 8:
            raise NotExact(f"the kernel needs a width divisible by 8, not {weight.shape[1]}")
        self.lib = _lib()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(
            weight, requires_grad=False)
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32))
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x if x.dtype is _F32 else x.to(_F32)
        if not x32.is_contiguous():
            x32 = x32.contiguous()
        m = x32.numel() // self.in_features
        w = self.weight
        if m >= DENSE_FROM_ROWS:
            y = F.linear(x32, w.to(_F32))
        else:
            w = w.contiguous()
            y = torch.empty(x32.shape[:-1] + (self.out_features,), dtype=_F32)
            self.lib.qd_gemm_w16(w.data_ptr(), _KINDS[w.dtype], self.out_features,
                                 self.in_features, x32.data_ptr(), m, y.data_ptr(),
                                 torch.get_num_threads())
        if self.bias is not None:
            y = y + self.bias
        return y if x.dtype is _F32 else y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight {self.weight.dtype} (kept), computed in float32")


def int8_capable(model: nn.Module) -> list[NativeCodes]:
    """The kernels of ``model`` the int8-activation step applies to
    (``NativeCodes.takes_int8_activations``; stacked siblings are one)."""
    return [m for m in model.modules() if isinstance(m, NativeCodes) and m.takes_int8_activations]


def use_int8_activations(model: nn.Module, on: bool = True) -> int:
    """Turn the int8-activation decode step on (or off) for every layer of
    ``model`` it applies to (``int8_capable``); takes effect from the next
    product. Returns how many kernels it set."""
    kernels = int8_capable(model)
    for module in kernels:
        module.int8_activations = on
    return len(kernels)


def sixteen_bit_keys(model: nn.Module, quantized: Iterable[str]) -> set[str]:
    """The weights a float32 model on these kernels may keep in 16 bits: those of
    plain embeddings (a lookup returns the weight's values; a scaled embedding
    multiplies in its own dtype, so it is not one) and of Linears that are not
    quantized (``quantized``: their names)."""
    quantized = set(quantized)
    keys = set()
    for name, module in model.named_modules():
        if type(module) in (nn.Embedding, nn.Linear) and name not in quantized:
            keys.add(f"{name}.weight" if name else "weight")
    return keys


def use_sixteen_bit_products(model: nn.Module) -> tuple[str, ...]:
    """Put ``Dense16Linear`` where a plain Linear holds a 16-bit weight (a tied head
    shares the embedding's), and make plain 16-bit embeddings hand float32 on.
    Returns the names of both."""

    def to_float32(_module, _args, out):
        return out.to(_F32)

    names = []
    for name, module in list(model.named_modules()):
        weight = getattr(module, "weight", None)
        if weight is None or weight.dtype not in (torch.bfloat16, torch.float16):
            continue
        if type(module) is nn.Embedding:
            module.register_forward_hook(to_float32)
            names.append(name)
        elif type(module) is nn.Linear:
            try:
                layer = Dense16Linear(weight, module.bias)
            except NotExact:  # a width the kernel does not take: float32 as before
                module.to(_F32)
                continue
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, layer)
            names.append(name)
    return tuple(names)
