"""qdesk's own CPU kernels (qdesk/core/packed/native): the weight they hold is the
checkpoint's bit for bit, their products are float32 sums of it, the portable
build agrees with the vectorized one, and a machine without them falls back."""

from __future__ import annotations

import ctypes

import pytest
import torch
from packed_helpers import random_weight
from torch.testing import assert_close

from qdesk.core.packed import NotExact, QuantLinear, native
from qdesk.core.packed.native_kernels import (
    DENSE_FROM_ROWS,
    Dense16Linear,
    NativeCodes,
    pack_nibbles,
    unpack_nibbles,
    use_int8_activations,
)
from qdesk_kernels import cpu

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"qdesk's CPU kernels: {native.why_not()}")


def _worst(y, x, w) -> float:
    """The largest error of y against x W^T in units of |x| |W|^T (each
    output's rounding scale)."""
    ref = x.to(torch.float64) @ w.t()
    bound = x.abs().to(torch.float64) @ w.abs().t()
    return float(((y.to(torch.float64) - ref).abs() / (bound + 1e-30)).max())


def test_nibbles_round_trip():
    u = torch.randint(0, 16, (7, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = pack_nibbles(u)
    assert packed.shape == (7, 32)
    assert torch.equal(unpack_nibbles(packed), u)
    # byte j of a block of 16 columns: column j low, column j + 8 high
    assert int(packed[0, 0]) == int(u[0, 0]) | int(u[0, 8]) << 4


@pytest.mark.parametrize("bits", [8, 5, 4, 3, 2])
# 32/64/128: compiled apart; 16 and 48 take the AVX2 row on an AVX-512 build, 96 both
# halves of its 16-lane loop
@pytest.mark.parametrize("group", [-1, 16, 32, 48, 64, 96, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_weight_is_the_checkpoints_and_products_round_like_float32(bits, group, symmetric):
    n, k = 100, 384  # 100 rows: not a multiple of the multi-row kernels' two
    qw = random_weight(n, k, bits, group, symmetric, seed=bits * 100 + max(group, 0))
    exact = qw.dequantize(torch.float64)
    layer = NativeCodes(qw, torch.float32)
    assert layer.code_bits == (4 if bits <= 4 else 8)
    assert_close(layer.dequantize(torch.float64), exact, rtol=0, atol=0)
    g = torch.Generator().manual_seed(k)
    for rows in (1, 2, 3, 4, 5, 9, DENSE_FROM_ROWS):  # every kernel path, then the dense one
        x = torch.randn(rows, k, generator=g)
        y = layer(x)
        assert y.dtype == torch.float32 and y.shape == (rows, n)
        assert _worst(y, x, exact) <= 1e-6, rows


def test_bfloat16_activations_and_leading_dimensions():
    qw = random_weight(64, 128, 4, 32, True)
    exact = qw.dequantize(torch.float64)
    layer = QuantLinear(qw, dtype=torch.bfloat16, kernel="native")
    x = torch.randn(2, 3, 128).to(torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 64)
    # one rounding of the float32 result to bfloat16 (2^-8), as a bf16 matmul's output
    assert _worst(y.reshape(-1, 64), x.reshape(-1, 128), exact) <= 2**-8
    bias = torch.randn(64)
    with_bias = QuantLinear(qw, bias, dtype=torch.float32, kernel="native")
    x32 = x.float()
    assert _worst(with_bias(x32).reshape(-1, 64) - bias, x32.reshape(-1, 128), exact) <= 1e-6


def test_what_it_cannot_hold_exactly_is_refused_and_quantlinear_falls_back():
    fz = random_weight(64, 128, 4, 32, False, float_zero=True)
    with pytest.raises(NotExact, match="float zero"):
        NativeCodes(fz, torch.float32)
    layer = QuantLinear(fz, dtype=torch.float32)
    assert layer.kernel != "native" and any("float zero" in r for r in layer.skipped)
    with pytest.raises(NotExact, match="divisible by 16"):
        NativeCodes(random_weight(64, 72, 4, -1, True), torch.float32)


def test_the_weight_stays_in_the_checkpoints_width():
    qw = random_weight(1024, 1024, 4, 64, True)
    layer = NativeCodes(qw, torch.float32)
    held = sum(b.numel() * b.element_size() for b in layer.buffers())
    assert held == 1024 * 1024 // 2 + 1024 * (1024 // 64) * 2  # 4-bit codes, bf16 scales
    asym = NativeCodes(random_weight(1024, 1024, 4, 64, False), torch.float32)
    assert sum(b.numel() * b.element_size() for b in asym.buffers()) == held + 1024 * 16 * 4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16bit_weight_multiplies_in_float32(dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(96, 64, generator=g).to(dtype)
    layer = Dense16Linear(w, torch.randn(96, generator=g))
    for rows in (1, 2, 5, DENSE_FROM_ROWS):
        x = torch.randn(rows, 64, generator=g)
        y = layer(x) - layer.bias
        assert _worst(y, x, w.to(torch.float64)) <= 1e-6


_LESSER_BUILDS = {"portable": ([], 0, ("avx2", "avx512")),
                  "avx2": (["-mavx2", "-mfma", "-mf16c"], 2, ("avx512",))}


@pytest.mark.parametrize("build", list(_LESSER_BUILDS))
def test_a_lesser_cpus_build_agrees_with_this_ones(tmp_path, build):
    """The C loops a CPU without AVX2 runs (built here without the vector flags),
    and on an AVX-512 machine the AVX2 build, against the build loaded here."""
    flags, simd, above = _LESSER_BUILDS[build]
    if native.simd() not in above:
        pytest.skip(f"this machine runs the {native.simd()} build")
    cc = cpu.compiler()
    out = tmp_path / f"{build}.so"
    cpu.build(cc, ["-O2", "-shared", "-fPIC", "-std=c99", *flags], out)
    lib = cpu.declare(ctypes.CDLL(str(out)))
    assert lib.qd_simd() == simd
    for bits, group, symmetric in ((4, 32, True), (4, 64, False), (4, 96, True), (4, 16, False),
                                   (8, -1, False)):
        qw = random_weight(36, 192, bits, group, symmetric, seed=bits)
        layer = NativeCodes(qw, torch.float32)
        exact = qw.dequantize(torch.float64)
        for rows in (1, 3):
            x = torch.randn(rows, 192, generator=torch.Generator().manual_seed(rows))
            # both builds' sums, in their own orders, are float32 rounding apart
            bound = x.abs().to(torch.float64) @ exact.abs().t()
            y = torch.empty(rows, 36)
            lib.qd_gemm_codes(*layer._fixed, x.data_ptr(), rows, y.data_ptr(), 1)
            assert ((y - layer(x)).abs() <= 1e-6 * bound).all()
            # the int8-activation step: the same integer sums in plain C
            lib.qd_gemm_codes_q8(*layer._fixed, x.data_ptr(), rows, y.data_ptr(), 1)
            layer.int8_activations = True
            assert ((y - layer(x)).abs() <= 1e-6 * bound).all()
            layer.int8_activations = False
    w = torch.randn(12, 64).to(torch.bfloat16)
    x = torch.randn(1, 64)
    y = torch.empty(1, 12)
    lib.qd_gemm_w16(w.data_ptr(), 1, 12, 64, x.data_ptr(), 1, y.data_ptr(), 1)
    assert_close(y, Dense16Linear(w)(x), rtol=1e-5, atol=1e-5)


def _rounded_row(x: torch.Tensor) -> torch.Tensor:
    """The row the int8-activation step multiplies with, float64: each block of 64
    columns rounded to int8 steps of (block's largest |x|) / 127, computed in
    float32 with the kernel's own operations (so a half-way case rounds alike)."""
    blocks = x.reshape(-1, 64)
    amax = blocks.abs().amax(dim=1, keepdim=True)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    v = blocks * inv
    q = torch.where(v >= 0, torch.trunc(v + 0.5), torch.trunc(v - 0.5))
    return (q.to(torch.float64) * (amax / 127.0).to(torch.float64)).reshape(x.shape)


@pytest.mark.parametrize("bits", [4, 3, 2])
@pytest.mark.parametrize("group", [-1, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_int8_activations_multiply_the_rounded_row_with_the_exact_weight(bits, group, symmetric):
    n, k = 37, 256  # 37 rows: the four-row kernel and the single rows after it
    qw = random_weight(n, k, bits, group, symmetric, seed=bits * 10 + max(group, 0))
    exact = qw.dequantize(torch.float64)
    layer = NativeCodes(qw, torch.float32)
    assert not layer.int8_activations
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, k, generator=g) * torch.linspace(0.1, 10.0, k)  # blocks of unlike ranges
    y_exact = layer(x)
    layer.int8_activations = True
    y = layer(x)
    xr = _rounded_row(x)
    # the integer sums are exact; what is left is float32 rounding of the rest
    assert _worst(y, xr, exact) <= 1e-6
    # and against the exact product, no more than the rounding of x can move it
    half_step = (x.reshape(-1, 64).abs().amax(dim=1) / 127 / 2).repeat_interleave(64)
    bound = exact.abs() @ half_step.to(torch.float64)
    assert ((y - y_exact).abs().to(torch.float64)[0] <= bound + 1e-5).all()
    assert not torch.equal(y, y_exact)  # it is a different product
    layer.int8_activations = False
    assert torch.equal(layer(x), y_exact)


def test_int8_activations_only_for_a_single_row_of_4bit_codes_in_64_column_groups():
    x = torch.randn(1, 128, generator=torch.Generator().manual_seed(0))
    for qw in (random_weight(8, 128, 8, 64, True), random_weight(8, 128, 4, 32, True)):
        layer = NativeCodes(qw, torch.float32)
        y = layer(x)
        layer.int8_activations = True
        assert torch.equal(layer(x), y)  # 8-bit codes, groups of 32: the exact kernel
    layer = NativeCodes(random_weight(8, 128, 4, 64, True), torch.float32)
    rows = torch.randn(3, 128, generator=torch.Generator().manual_seed(1))
    y = layer(rows)
    layer.int8_activations = True
    assert torch.equal(layer(rows), y)  # several rows (a prefill, scoring): exact
    assert not torch.equal(layer(rows[:1]), y[:1])


def test_int8_activations_switch_every_kernel_of_a_model_stacked_ones_included():
    from qdesk.core.packed.fusion import fuse_siblings

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, name in enumerate(("q_proj", "k_proj", "v_proj", "o_proj")):
                setattr(self, name, QuantLinear(random_weight(64, 128, 4, 64, True, seed=i),
                                                dtype=torch.float32, kernel="native"))
            # groups of 32: the int8 step does not apply, and it is not counted
            self.down_proj = QuantLinear(random_weight(64, 128, 4, 32, True, seed=9),
                                         dtype=torch.float32, kernel="native")

    block = Block()
    assert fuse_siblings(block) == 1
    assert use_int8_activations(block) == 2  # the stacked q/k/v and o_proj
    assert not block.down_proj.impl.int8_activations
    kernels = [m for m in block.modules() if isinstance(m, NativeCodes) and m.group == 64]
    assert len(kernels) == 2 and all(m.int8_activations for m in kernels)
    x = torch.randn(1, 128)
    on = block.q_proj(x)
    use_int8_activations(block, False)
    assert not any(m.int8_activations for m in kernels)
    assert not torch.equal(block.q_proj(x), on)


def test_a_failed_build_leaves_nothing_and_says_why(tmp_path, monkeypatch):
    out = tmp_path / "native" / "lib.so"
    with pytest.raises(OSError, match="failed"):
        cpu.build("/bin/false", ["-O2"], out)
    assert not out.exists() and not list(out.parent.iterdir())
    # no kernels at all: the library says why, QuantLinear uses torch's ops
    monkeypatch.setenv("QDESK_NATIVE", "0")
    cpu.library.cache_clear()
    try:
        assert native.library() is None and "QDESK_NATIVE=0" in native.why_not()
        layer = QuantLinear(random_weight(64, 128, 4, 32, True), dtype=torch.float32)
        assert layer.kernel != "native"
    finally:
        monkeypatch.delenv("QDESK_NATIVE")
        cpu.library.cache_clear()
    assert native.library() is not None


def test_a_replaced_or_converted_buffer_is_bound_again():
    """The kernel reads its buffers through pointers taken when it binds: a scale
    converted by ``.to`` or replaced by ``register_buffer`` / assignment must
    bind again (with the new dtype's kind), or the kernel reads freed memory."""
    qw = random_weight(96, 256, 4, 64, True, seed=3)
    layer = NativeCodes(qw, torch.float32)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(1))
    want = layer(x)
    assert layer.scale.dtype == torch.bfloat16
    layer.register_buffer("scale", layer.scale.to(torch.float32))  # exact: same products
    assert layer._fixed[2] == layer.scale.data_ptr() and layer.kind == 0
    assert torch.equal(layer(x), want)
    layer.scale = layer.scale.to(torch.bfloat16).clone()
    assert layer._fixed[2] == layer.scale.data_ptr() and layer.kind == 1
    assert torch.equal(layer(x), want)
    layer.to(torch.float32)  # Module.to converts the floating buffers
    assert layer.scale.dtype == torch.float32 and layer._fixed[2] == layer.scale.data_ptr()
    assert torch.equal(layer(x), want)
    with pytest.raises(TypeError, match="float32 zero points"):  # loud, never a misread
        NativeCodes(random_weight(96, 256, 4, 64, False, seed=4), torch.float32).to(torch.bfloat16)


def test_pack_linears_leaves_the_kernels_scales_as_stored():
    """``pack_linears`` (a model packed in place, as the 1B benchmark does) turns
    the rest of a bfloat16 model to float32 but not the kernels' 16-bit scales;
    its logits are the dequantized weights' to float32 rounding. (Converting the
    scales behind the kernels' backs made them read freed memory: NaN logits.)"""
    import gc

    from families import tiny_model
    from packed_helpers import rtn_records

    from qdesk.core.packed import pack_linears

    model = tiny_model("llama", seed=2, dtype=torch.bfloat16)
    records = rtn_records(model, 4, 64, True)
    reference = tiny_model("llama", seed=2, dtype=torch.bfloat16).float()
    with torch.no_grad():
        for name, qw in records.items():
            reference.get_submodule(name).weight.copy_(qw.dequantize(torch.float32))
    pack_linears(model, records, torch.float32)
    del records
    gc.collect()
    junk = [torch.randn(4096) for _ in range(64)]  # reuse what a stale pointer would read
    kernels = [m for m in model.modules() if isinstance(m, NativeCodes)]
    assert kernels and all(m.scale.dtype == torch.bfloat16 and m.kind == 1 for m in kernels)
    assert all(m._fixed[2] == m.scale.data_ptr() for m in kernels)
    ids = torch.arange(5, 25).unsqueeze(0)
    with torch.inference_mode():
        got = model(input_ids=ids).logits
        want = reference(input_ids=ids).logits
    del junk
    assert torch.isfinite(got).all()
    assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))
