"""Each method does what it claims on a weight whose inputs have outlier channels."""

from __future__ import annotations

import pytest
import torch

from qdesk.core.quant.awq import apply_awq
from qdesk.core.quant.configs import AWQConfig, GPTQConfig, HQQConfig, RTNConfig
from qdesk.core.quant.layouts import family_named
from qdesk.core.quant.methods import quantize_weight
from qdesk.core.quant.stats import InputStats, relative_output_error


def _problem(seed=0, out=64, inp=128, tokens=512):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * 0.05
    gain = torch.ones(inp)
    gain[:: 16] = 8.0  # a few salient channels, as real activations have
    # correlated channels (real activations are far from white), a few of them salient
    mix = torch.randn(32, inp, generator=g)
    x = (torch.randn(tokens, 32, generator=g) @ mix + 0.3 * torch.randn(tokens, inp, generator=g))
    x = x * gain
    stats = InputStats(inp, "cpu", True, 10_000, 1)
    stats.add(x)
    return w, x, stats


def _err(w, cfg, stats, x):
    return relative_output_error(w, quantize_weight(w, cfg, stats).dequantize(), x)


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_beats_rtn_on_output_error(symmetric):
    w, x, stats = _problem()
    rtn = _err(w, RTNConfig(bits=3, group_size=32, symmetric=symmetric), stats, x)
    gptq = _err(w, GPTQConfig(bits=3, group_size=32, symmetric=symmetric), stats, x)
    assert gptq < 0.9 * rtn


def test_gptq_act_order_and_per_channel_work():
    w, x, stats = _problem(seed=1)
    rtn = _err(w, RTNConfig(bits=4, group_size=-1), stats, x)
    for cfg in (GPTQConfig(bits=4, group_size=-1), GPTQConfig(bits=4, group_size=32, act_order=True)):
        assert _err(w, cfg, stats, x) < rtn


@pytest.mark.parametrize("options", [{"zero": "float"}, {"zero": "int", "refit": True}])
def test_hqq_lowers_weight_error_against_min_max(options):
    w, _, _ = _problem(seed=2)
    plain = RTNConfig(bits=3, group_size=64, symmetric=False, clip_search=False)
    e_rtn = (quantize_weight(w, plain).dequantize() - w).abs().mean()
    hqq = HQQConfig(bits=3, group_size=64, **options)
    e_hqq = (quantize_weight(w, hqq).dequantize() - w).abs().mean()
    assert e_hqq < e_rtn


def test_error_falls_with_more_bits():
    w, x, stats = _problem(seed=3)
    for cfg_cls in (RTNConfig, GPTQConfig):
        errs = [_err(w, cfg_cls(bits=b, group_size=32), stats, x) for b in (2, 3, 4, 8)]
        assert errs == sorted(errs, reverse=True)
        assert errs[-1] < 0.01


def test_awq_scaling_keeps_the_float_function_and_helps():
    torch.manual_seed(0)
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.ones(128))
    layer = torch.nn.Module()
    layer.input_layernorm = norm
    attn = torch.nn.Module()
    layer.self_attn = attn
    w, x, _ = _problem(seed=4)
    for name in ("q_proj", "k_proj", "v_proj"):
        lin = torch.nn.Linear(128, 64, bias=False)
        lin.weight.data.copy_(w + 0.01 * torch.randn_like(w))
        setattr(attn, name, lin)
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    cfg = AWQConfig(bits=3, group_size=32, clip_search=False)
    before = {n: layer.get_submodule(n).weight.data.clone() for n in names}
    stats = InputStats(128, "cpu", True, 10_000, 1)
    stats.add(x)
    shared = {n: stats for n in names}
    rtn_err = sum(relative_output_error(before[n], quantize_weight(
        before[n], RTNConfig(bits=3, group_size=32, clip_search=False)).dequantize(), x)
        for n in names)
    chosen = apply_awq(layer, {n: cfg for n in names}, shared, family_named("llama"))
    assert "input_layernorm" in chosen
    s = 1.0 / norm.weight.data  # x / s reaches the Linears now
    for n in names:  # the float function is unchanged: (x / s) (W s)^T = x W^T
        assert torch.allclose((x / s) @ layer.get_submodule(n).weight.data.t(), x @ before[n].t(),
                              atol=1e-3)
    awq_err = sum(relative_output_error(before[n], (quantize_weight(
        layer.get_submodule(n).weight.data, cfg, shared[n]).dequantize() / s), x) for n in names)
    assert awq_err < rtn_err


def test_output_aware_clipping_beats_weight_clipping_on_output_error():
    from qdesk.core.quant.rtn import quantize_output_clipped

    w, x, stats = _problem(seed=5)
    cfg = AWQConfig(bits=3, group_size=32)
    weight_clip = relative_output_error(w, quantize_weight(w, RTNConfig(bits=3, group_size=32)).dequantize(), x)
    out_clip = relative_output_error(w, quantize_output_clipped(w, cfg, stats).dequantize(), x)
    assert out_clip < weight_clip


@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_clip_search_lowers_weight_error_and_plain_is_min_max(symmetric):
    from qdesk.core.quant.primitives import choose_qparams

    w, _, _ = _problem(seed=4)
    plain = quantize_weight(w, RTNConfig(bits=4, group_size=32, symmetric=symmetric,
                                         clip_search=False))
    scale, zero = choose_qparams(w, 4, 32, symmetric)
    assert torch.equal(plain.scale, scale)
    assert zero is None if symmetric else torch.equal(plain.zero, zero)
    clipped = quantize_weight(w, RTNConfig(bits=4, group_size=32, symmetric=symmetric,
                                           clip_search=True))
    mse = [((qw.dequantize() - w) ** 2).sum() for qw in (plain, clipped)]
    assert mse[1] < mse[0]


def test_rtn_default_searches_only_on_the_old_symmetric_grid():
    assert RTNConfig(symmetric=True).clip_search is False
    assert RTNConfig(symmetric=True, narrow_grid=True).clip_search is True
    assert RTNConfig(symmetric=False).clip_search is False
    assert RTNConfig(symmetric=False, clip_search=True).clip_search is True
    # the recipe says what ran
    assert RTNConfig(symmetric=True, narrow_grid=True).to_json()["clip_search"] is True


def test_hqq_float_zero_is_fractional_and_beats_its_integer_zero():
    w, _, _ = _problem(seed=5)
    fz = quantize_weight(w, HQQConfig(bits=3, group_size=64, zero="float"))
    iz = quantize_weight(w, HQQConfig(bits=3, group_size=64))
    assert fz.zero.dtype == torch.bfloat16 and iz.zero.dtype == torch.int8
    assert not torch.equal(fz.zero.float(), fz.zero.float().round())
    err = [(qw.dequantize() - w).abs().mean() for qw in (fz, iz)]
    assert err[0] < err[1]


def test_hqq_float_zero_fit_keeps_each_group_sum():
    w, _, _ = _problem(seed=6)
    qw = quantize_weight(w, HQQConfig(bits=3, group_size=64, zero="float"))
    drift = (qw.dequantize() - w).reshape(64, 2, 64).sum(-1).abs()
    plain = quantize_weight(w, HQQConfig(bits=3, group_size=64, zero="float", refit=False))
    drift_plain = (plain.dequantize() - w).reshape(64, 2, 64).sum(-1).abs()
    # what is left comes only from storing the zero in bfloat16: at most half its
    # spacing (8 significant bits) times the scale, per weight
    z, scale = qw.zero.float(), qw.scale.float()
    half_ulp = torch.exp2(torch.floor(torch.log2(z.abs().clamp_min(2**-20))) - 8)
    assert bool((drift <= 64 * scale * half_ulp * 1.001 + 1e-6).all())
    assert drift.mean() < 0.25 * drift_plain.mean()
    assert HQQConfig(zero="float").refit is True
    assert HQQConfig(bits=4).refit is False and HQQConfig(bits=3).refit is True


def test_hqq_zero_option_is_checked():
    from qdesk.core.errors import BadInput

    with pytest.raises(BadInput, match="HQQ zero must be one of int, float"):
        HQQConfig(zero="half")


def test_activation_weighted_rtn_lowers_the_weighted_error():
    """With inputs whose channels differ in size, weighting each column's rounding
    error by the inputs' mean square lowers the output error below plain RTN's
    (min-max, and the unweighted range search)."""
    import types

    from qdesk.core.errors import BadInput
    from qdesk.core.quant.configs import RTNConfig
    from qdesk.core.quant.methods import method_for, quantize_weight

    torch.manual_seed(0)
    w = torch.randn(64, 256)
    x = torch.randn(4096, 256) * torch.logspace(-1.5, 0.5, 256)[torch.randperm(256)]
    stats = types.SimpleNamespace(hessian=x.t() @ x, tokens=x.shape[0])

    def out_err(cfg):
        deq = quantize_weight(w, cfg, stats).dequantize()
        return float(((x @ (deq - w).t()) ** 2).mean())

    for symmetric in (True, False):
        weighted = out_err(RTNConfig(bits=3, symmetric=symmetric, act_weighted=True))
        assert weighted < 0.95 * out_err(RTNConfig(bits=3, symmetric=symmetric, clip_search=False))
        assert weighted < 0.95 * out_err(RTNConfig(bits=3, symmetric=symmetric, clip_search=True))
    assert method_for(RTNConfig(act_weighted=True)).needs_hessian
    assert not method_for(RTNConfig()).needs_hessian
    with pytest.raises(BadInput, match="calibration"):
        quantize_weight(w, RTNConfig(act_weighted=True))
