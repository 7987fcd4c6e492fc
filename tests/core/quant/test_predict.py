"""The quantize page's prediction: bits per weight equal to what the job reports
(for every format and plan), the checkpoint's size within a percent, the job's
memory as the job computes it."""

from __future__ import annotations

import os

import pytest
import torch
from quant_helpers import calib, make_tiny

from qdesk.core.quant.configs import make_config
from qdesk.core.quant.plans import Plan, PlanRule, load_plan
from qdesk.core.quant.predict import model_shapes, predict
from qdesk.core.quant.steps import quantize_steps

CASES = [
    ("rtn", dict(bits=4, group_size=32, symmetric=True), "uniform"),
    ("rtn", dict(bits=4, group_size=64, symmetric=False), "uniform"),
    ("gptq", dict(bits=3, group_size=-1, symmetric=True), "uniform"),
    ("gptq", dict(bits=8, group_size=32, symmetric=False), "attn-keep"),
    ("hqq", dict(bits=4, group_size=64, symmetric=False, zero="float"), "uniform"),
    ("awq", dict(bits=4, group_size=64, symmetric=True), "qk-keep"),
]


def _run(model, config, plan, out):
    events = list(quantize_steps(model, config, plan, calib(), output_dir=out))
    return events[-1]


@pytest.mark.parametrize("method, options, plan_name", CASES)
def test_predicted_bits_per_weight_and_size_are_the_jobs(tmp_path, method, options, plan_name):
    model = make_tiny(dtype=torch.bfloat16)
    shapes = model_shapes(model)
    config = make_config(method, **options)
    plan = load_plan(plan_name)
    p = predict(shapes, config, plan, samples=4, tokens=32)
    out = tmp_path / "q"
    summary = _run(model, config, plan, out)
    assert p.exact
    assert round(p.bits_per_weight, 4) == summary.bits_per_weight
    assert p.layers_quantized == summary.layers_quantized
    weights = os.path.getsize(out / "model.safetensors")
    assert abs(p.weights_bytes - weights) <= 0.01 * weights, (p.weights_bytes, weights)


def test_a_custom_plan_with_mixed_schemes(tmp_path):
    model = make_tiny(dtype=torch.bfloat16)
    shapes = model_shapes(model)
    config = make_config("rtn", bits=4, group_size=32, symmetric=False)
    names = [lin.name for lin in shapes.linears]
    plan = Plan("custom", (PlanRule(names[0], keep=True), PlanRule(names[1], bits=8),
                           PlanRule(names[2], group_size=-1), PlanRule(names[3], method="hqq")))
    p = predict(shapes, config, plan, samples=4, tokens=32)
    summary = _run(model, config, plan, tmp_path / "q")
    assert round(p.bits_per_weight, 4) == summary.bits_per_weight
    weights = os.path.getsize(tmp_path / "q" / "model.safetensors")
    assert abs(p.weights_bytes - weights) <= 0.01 * weights


def test_sensitivity_predicts_its_budget_as_a_bound(tmp_path):
    model = make_tiny(dtype=torch.bfloat16)
    shapes = model_shapes(model)
    config = make_config("rtn", bits=3, group_size=32)
    plan = load_plan("sensitivity", budget_bpw=4.0)
    p = predict(shapes, config, plan, samples=4, tokens=32)
    assert not p.exact and p.bits_per_weight == 4.0
    summary = _run(model, config, plan, tmp_path / "q")
    assert summary.bits_per_weight <= p.bits_per_weight


def test_memory_is_the_jobs_own_estimate():
    from qdesk.core.quant.layerwalk import decoder_layers, fast_compute_dtype
    from qdesk.core.quant.steps import job_memory_bytes

    model = make_tiny()
    shapes = model_shapes(model)
    p = predict(shapes, make_config("gptq", bits=4, group_size=32), Plan(), samples=8, tokens=64)
    dtype = fast_compute_dtype(torch.float32, torch.device("cpu"))
    ids = torch.zeros(8, 64, dtype=torch.int64)
    assert p.memory_bytes == job_memory_bytes(model, decoder_layers(model), ids, dtype, True)
    # SignRound carries the dense model's activations too: two more sets
    sr = predict(shapes, make_config("signround", bits=4, group_size=32), Plan(), samples=8,
                 tokens=64)
    assert sr.memory_bytes == job_memory_bytes(model, decoder_layers(model), ids, dtype, False,
                                               dense_stream=True)
    hidden = model.config.hidden_size
    assert sr.memory_bytes - job_memory_bytes(model, decoder_layers(model), ids, dtype, False) \
        == 2 * 8 * 64 * hidden * torch.empty((), dtype=dtype).element_size()


def test_group_sizes_that_do_not_divide_are_said():
    shapes = model_shapes(make_tiny())
    good, refused = shapes.divisors((-1, 32, 64, 128, 192))
    assert good == [-1, 32, 64] and refused == [128, 192]
    from qdesk.core.errors import BadInput

    with pytest.raises(BadInput, match="does not divide"):
        predict(shapes, make_config("rtn", bits=4, group_size=128), Plan(), 4, 32)


def test_the_time_counts_the_self_check_the_job_runs():
    from qdesk.core.quant import predict as prediction
    from qdesk.core.quant.selfcheck import SelfCheckSpec
    from qdesk.core.quant.steps import DEFAULT_CHECK

    assert prediction._CHECK_TOKENS == DEFAULT_CHECK.windows * DEFAULT_CHECK.ctx
    assert DEFAULT_CHECK == SelfCheckSpec()
    shapes = model_shapes(make_tiny())
    config = make_config("rtn", bits=4, group_size=32)
    with_check = predict(shapes, config, Plan(), 4, 32).seconds
    without = predict(shapes, config, Plan(), 4, 32, self_check=False).seconds
    assert with_check > without
