"""The symmetric grid that uses all 2^b codes (llama.cpp Q4_0's, auto-round's),
bit-exact at every width, against a direct per-group reference."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from qdesk.core.quant.primitives import choose_qparams, dequantize, qrange, quantize


def _reference(w: torch.Tensor, bits: int, group: int):
    """Scale and codes group by group in plain Python floats (float32 arithmetic)."""
    qmin, qmax = qrange(bits)
    out, inp = w.shape
    g = inp if group == -1 else group
    scales = torch.empty(out, inp // g, dtype=torch.bfloat16)
    codes = torch.empty(out, inp, dtype=torch.int8)
    for r in range(out):
        for k in range(inp // g):
            vals = w[r, k * g:(k + 1) * g].float()
            vmax = vals[int(vals.abs().argmax())]
            s = (vmax / qmin).to(torch.bfloat16)
            scales[r, k] = s
            codes[r, k * g:(k + 1) * g] = torch.round(vals / s.float()).clamp(qmin, qmax).to(torch.int8)
    return scales, codes


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group", [-1, 32, 64])
def test_full_grid_is_bit_exact_with_the_reference(bits, group):
    torch.manual_seed(10 + bits)
    w = torch.randn(6, 128) * torch.rand(6, 1)
    scale, zero = choose_qparams(w, bits, group, True)
    assert zero is None
    q = quantize(w, scale, zero, bits, group)
    ref_scale, ref_q = _reference(w, bits, group)
    assert_close(scale, ref_scale, rtol=0, atol=0)
    assert_close(q, ref_q, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_every_code_is_used_and_the_extreme_maps_to_the_lowest(bits):
    torch.manual_seed(bits)
    qmin, qmax = qrange(bits)
    w = torch.randn(64, 256)
    scale, _ = choose_qparams(w, bits, 64, True)
    q = quantize(w, scale, None, bits, 64)
    assert int(q.min()) == qmin and int(q.max()) == qmax
    # each group's largest magnitude codes to qmin, whatever its sign
    wg = w.reshape(64, 4, 64)
    at = wg.abs().argmax(-1, keepdim=True)
    assert bool((q.reshape(64, 4, 64).gather(-1, at) == qmin).all())
    # the scale carries the extreme's sign: positive extreme -> negative scale
    assert bool(((wg.gather(-1, at).squeeze(-1) > 0) == (scale.float() < 0)).all())
    # all 2^b levels appear (with 256 values per row and a Gaussian, they do)
    assert len(torch.unique(q)) == 2 ** bits


def test_narrow_grid_is_the_older_one():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    scale, _ = choose_qparams(w, 4, 32, True, narrow=True)
    amax = w.reshape(8, 2, 32).abs().amax(-1)
    assert_close(scale, (amax / 7).to(torch.bfloat16), rtol=0, atol=0)
    q = quantize(w, scale, None, 4, 32)
    assert int(q.min()) >= -7 and int(q.max()) <= 7


def test_full_grid_error_is_smaller_than_the_narrow_one():
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    errs = {}
    for narrow in (False, True):
        scale, _ = choose_qparams(w, 4, 64, True, narrow=narrow)
        deq = dequantize(quantize(w, scale, None, 4, 64), scale, None, 64)
        errs[narrow] = float(((deq - w) ** 2).mean())
    assert errs[False] < 0.85 * errs[True]


def test_all_zero_group_codes_to_zero():
    w = torch.zeros(2, 64)
    w[1, 32:] = torch.linspace(-1, 1, 32)
    scale, _ = choose_qparams(w, 4, 32, True)
    q = quantize(w, scale, None, 4, 32)
    assert bool((q[0] == 0).all()) and bool((q[1, :32] == 0).all())
    assert bool(torch.isfinite(dequantize(q, scale, None, 32)).all())


@pytest.mark.parametrize("bits,gguf_type", [(8, "Q8_0"), (4, "Q4_0"), (3, "Q4_0"), (2, "Q4_0")])
@pytest.mark.parametrize("group", [32, 64])
def test_full_grid_weights_export_exactly(bits, gguf_type, group):
    """Negative scales and the lowest code (-128 / -8) survive the exact GGUF types:
    llama.cpp's dequantization gives qdesk's weights bit for bit."""
    import gguf
    import numpy as np

    from qdesk.core.export.exact import encode

    torch.manual_seed(bits + group)
    w = torch.randn(8, 128) * 0.02
    scale, _ = choose_qparams(w, bits, group, True)
    q = quantize(w, scale, None, bits, group)
    assert int(q.min()) == qrange(bits)[0] and bool((scale.float() < 0).any())
    blocks, hs = encode(q.numpy(), scale.float().numpy(), None, group, gguf_type)
    assert hs.inexact == 0
    got = gguf.quants.dequantize(blocks, getattr(gguf.GGMLQuantizationType, gguf_type))
    want = dequantize(q, scale, None, group).numpy()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("method,options", [
    ("rtn", {"bits": 8, "group_size": -1}), ("rtn", {"bits": 2}),
    ("rtn", {"act_weighted": True}), ("rtn", {"act_weighted": True, "symmetric": False}),
    ("signround", {"iters": 4, "batch_size": 2}),
    ("signround", {"iters": 4, "batch_size": 2, "symmetric": False, "bits": 3}),
])
def test_checkpoints_load_in_transformers_with_equal_logits(tmp_path, method, options):
    from quant_helpers import calib, make_tiny
    from transformers import AutoModelForCausalLM

    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    model = make_tiny(seed=7)
    out = tmp_path / "q"
    result = run_quantize(model, make_config(method, **options), None, calib(), output_dir=out)
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(9))
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    if options.get("symmetric", True):
        qmin = qrange(options.get("bits", 4))[0]
        assert any(int(r.q.min()) == qmin for r in result.records.values())
