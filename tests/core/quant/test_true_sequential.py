"""True-sequential GPTQ: each stage of a layer (q/k/v, o, gate/up, down) is
quantized from the inputs the already quantized stages before it produce."""

from __future__ import annotations

import copy

import pytest
import torch
from families import tiny_model
from quant_helpers import calib, make_tiny
from torch.testing import assert_close

from qdesk.core.quant import layerwalk
from qdesk.core.quant.configs import make_config
from qdesk.core.quant.gptq import quantize_gptq
from qdesk.core.quant.layerwalk import call_stages, capture_inputs, decoder_layers, gather_stats
from qdesk.core.quant.steps import quantize_steps


def _layer0_inputs(model, cal):
    layers = decoder_layers(model)
    *_, (inputs, kwargs) = capture_inputs(model, layers, cal.input_ids, "cpu", torch.float32)
    return layers, inputs, kwargs


def _linears(layer):
    return [n for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("family,expected", [
    ("llama", [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
               ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]),
    ("phi3", [["self_attn.qkv_proj"], ["self_attn.o_proj"], ["mlp.gate_up_proj"],
              ["mlp.down_proj"]]),
])
def test_stages_follow_the_forward(family, expected):
    model = tiny_model(family)
    layers, inputs, kwargs = _layer0_inputs(model, calib(2, 16))
    names = sorted(_linears(layers[0]))  # any order in: the forward's order out
    stages = call_stages(layers[0], names, inputs[0], kwargs[0])
    assert [sorted(s) for s in stages] == [sorted(s) for s in expected]


def test_stopping_at_a_stage_gathers_the_same_statistics():
    model = make_tiny()
    cal = calib()
    layers, inputs, kwargs = _layer0_inputs(model, cal)
    layer = layers[0]
    down_calls = []
    layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: down_calls.append(1))
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    full = gather_stats(layer, names, True, inputs, kwargs[0], cal.input_ids.numel())
    assert len(down_calls) == len(inputs)
    cut = gather_stats(layer, names, True, inputs, kwargs[0], cal.input_ids.numel(),
                       stop_after=names[-1])
    assert len(down_calls) == len(inputs)  # the forwards stopped before the MLP
    assert cut["self_attn.k_proj"] is cut["self_attn.q_proj"]  # one input, one statistics
    assert_close(cut["self_attn.q_proj"].hessian, full["self_attn.q_proj"].hessian,
                 rtol=0, atol=0)


@pytest.mark.parametrize("sequential", [True, False])
def test_o_proj_is_quantized_from_the_quantized_attention_inputs(sequential, monkeypatch):
    # Rebuild layer 0's o_proj codes by hand: GPTQ on the Hessian of what o_proj
    # receives once q/k/v are quantized (true-sequential) or in the dense layer.
    # By hand in float32: the job's forwards too, as on a CPU without bf16
    # instructions (with AVX512-BF16 or AMX they run in bfloat16, whose choice
    # test_steps checks; this test would fail there on the rounding alone).
    monkeypatch.setattr(layerwalk, "_cpu_has_fast_bf16", lambda: False)
    model = make_tiny()
    dense = copy.deepcopy(model)
    cal = calib(8, 32)
    config = make_config("gptq", bits=4, group_size=32, true_sequential=sequential)
    result = None
    gen = quantize_steps(model, config, None, cal, check=None)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        result = stop.value
    layers, inputs, kwargs = _layer0_inputs(dense, cal)
    layer = layers[0]
    if sequential:
        for n in ("q_proj", "k_proj", "v_proj"):
            rec = result.records[f"model.layers.0.self_attn.{n}"]
            getattr(layer.self_attn, n).weight.data.copy_(rec.dequantize(torch.float32))
    stats = gather_stats(layer, ["self_attn.o_proj"], True, inputs, kwargs[0],
                         cal.input_ids.numel())
    by_hand = quantize_gptq(layer.self_attn.o_proj.weight.data, config,
                            stats["self_attn.o_proj"])
    assert torch.equal(by_hand.q, result.records["model.layers.0.self_attn.o_proj"].q)
