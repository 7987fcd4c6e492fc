"""The job on tiny random Llama models: events, checkpoints transformers loads with
the same logits, cancel, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from quant_helpers import calib, make_tiny
from torch.testing import assert_close

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import make_config
from qdesk.core.quant.events import (
    CalibrationProgress,
    LayerKept,
    LayerQuantized,
    QuantizeSummary,
    SavingCheckpoint,
)
from qdesk.core.quant.plans import PRESETS, Plan, PlanRule
from qdesk.core.quant.steps import quantize_steps, run_quantize

IDS = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(9))


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


def _load(path, dtype=None):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype} if dtype is not None else {}
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs).eval()


def test_events_in_order_and_nothing_saved_without_output(tmp_path):
    model = make_tiny()
    events = list(quantize_steps(model, make_config("rtn"), None, calib()))
    kinds = [type(e) for e in events]
    assert kinds[:4] == [CalibrationProgress] * 4
    layer_events = [e for e in events if isinstance(e, LayerQuantized)]
    assert len(layer_events) == 14 and [e.index for e in layer_events] == list(range(1, 15))
    assert layer_events[0].name == "model.layers.0.self_attn.q_proj"
    assert all(0 < e.rel_error < 1 and e.seconds >= 0 and e.bits == 4 for e in layer_events)
    assert kinds[-1] is QuantizeSummary and SavingCheckpoint not in kinds
    assert events[-1].bits_per_weight == pytest.approx(4.25)
    assert json.dumps(events[-1].to_json())
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("method,symmetric,group", [
    ("rtn", True, 32), ("rtn", False, -1), ("gptq", True, 64), ("gptq", False, 32),
    ("awq", True, 32), ("hqq", False, 64),
])
@pytest.mark.parametrize("bits", [4, 3])
def test_checkpoint_loads_in_transformers_with_equal_logits(tmp_path, method, symmetric, group, bits):
    model = make_tiny(seed=bits)
    config = make_config(method, bits=bits, group_size=group, symmetric=symmetric)
    out = tmp_path / "q"
    run_quantize(model, config, None, calib(), output_dir=out)
    assert_close(_logits(_load(out)), _logits(model), rtol=0, atol=0)
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = saved["config_groups"]["group_0"]["weights"]
    assert saved["format"] == "pack-quantized" and weights["num_bits"] == bits
    assert weights["symmetric"] == symmetric and weights["strategy"] == ("channel" if group == -1 else "group")
    recipe = json.loads((out / "qdesk.json").read_text())
    assert recipe["config"]["method"] == method and len(recipe["layers"]) == 14


@pytest.mark.parametrize("bits", [8, 2])
def test_eight_and_two_bits_round_trip(tmp_path, bits):
    model = make_tiny(seed=5)
    out = tmp_path / "q"
    run_quantize(model, make_config("rtn", bits=bits, symmetric=False), None, calib(), output_dir=out)
    assert_close(_logits(_load(out)), _logits(model), rtol=0, atol=0)


def test_bfloat16_model_round_trip(tmp_path):
    dense = tmp_path / "dense"
    make_tiny(seed=6).save_pretrained(dense)
    model = _load(dense, torch.bfloat16)
    out = tmp_path / "q"
    run_quantize(model, make_config("gptq", symmetric=False), None, calib(), output_dir=out)
    loaded = _load(out)
    assert loaded.dtype == torch.bfloat16
    assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)


def test_quantized_weights_live_on_the_grid():
    model = make_tiny()
    result = run_quantize(model, make_config("gptq", group_size=32), None, calib())
    qw = result.records["model.layers.1.mlp.down_proj"]
    assert qw.q.dtype == torch.int8 and int(qw.q.abs().max()) <= 8
    w = model.get_submodule("model.layers.1.mlp.down_proj").weight.data
    assert_close(w, qw.dequantize(w.dtype), rtol=0, atol=0)


def test_cancel_leaves_no_files_and_restores_the_model(tmp_path):
    model = make_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "q"
    steps = quantize_steps(model, make_config("awq"), None, calib(), output_dir=out)
    for event in steps:
        if isinstance(event, LayerQuantized) and event.index == 9:  # inside layer 1
            steps.close()
            break
    assert not list(tmp_path.iterdir())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_cancel_at_saving_writes_nothing(tmp_path):
    out = tmp_path / "q"
    steps = quantize_steps(make_tiny(), make_config("rtn"), None, calib(), output_dir=out)
    for event in steps:
        if isinstance(event, SavingCheckpoint):
            steps.close()
    assert not list(tmp_path.iterdir())


def test_existing_output_is_refused_unless_force_and_never_user_files(tmp_path):
    out = tmp_path / "q"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="exists"):
        run_quantize(make_tiny(), make_config("rtn"), None, calib(), output_dir=out)
    with pytest.raises(BadInput, match="not verifiably a qdesk checkpoint"):
        run_quantize(make_tiny(), make_config("rtn"), None, calib(), output_dir=out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    ck = tmp_path / "ck"
    run_quantize(make_tiny(), make_config("rtn"), None, calib(), output_dir=ck)
    run_quantize(make_tiny(), make_config("rtn", bits=8), None, calib(), output_dir=ck, force=True)
    assert json.loads((ck / "qdesk.json").read_text())["config"]["bits"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "q"]


def test_group_size_that_does_not_divide_names_the_layer():
    model = make_tiny(hidden_size=96, intermediate_size=192, num_attention_heads=4)
    with pytest.raises(BadInput, match=r"model\.layers\.0\.self_attn\.q_proj"):
        run_quantize(model, make_config("rtn", group_size=64), None, calib())
    # the plan can fall back instead
    plan = Plan("fallback", on_indivisible="per-channel")
    result = run_quantize(model, make_config("rtn", group_size=64), plan, calib())
    assert result.records["model.layers.0.self_attn.q_proj"].group_size == -1
    assert result.records["model.layers.0.mlp.down_proj"].group_size == 64


def test_already_quantized_model_is_refused(tmp_path):
    out = tmp_path / "q"
    run_quantize(make_tiny(), make_config("rtn"), None, calib(), output_dir=out)
    with pytest.raises(BadInput, match="already quantized"):
        run_quantize(_load(out), make_config("rtn"), None, calib())


def test_presets_keep_what_they_say(tmp_path):
    out = tmp_path / "q"
    events = list(quantize_steps(make_tiny(), make_config("rtn"), PRESETS["qk-keep"], calib(),
                                 output_dir=out))
    kept = {e.name for e in events if isinstance(e, LayerKept)}
    assert kept == {f"model.layers.{i}.self_attn.{p}_proj" for i in (0, 1) for p in "qk"}
    bits = {e.name.split(".")[-1]: e.bits for e in events if isinstance(e, LayerQuantized)}
    assert bits["v_proj"] == 8 and bits["o_proj"] == 4 and bits["down_proj"] == 4
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    assert len(saved["config_groups"]) == 2
    assert "model.layers.0.self_attn.q_proj" in saved["ignore"] and "lm_head" in saved["ignore"]
    summary = events[-1]
    assert summary.layers_kept == 4 and 4.25 < summary.bits_per_weight < 16


def test_mixed_methods_in_one_plan(tmp_path):
    plan = Plan("mixed", (PlanRule("*.mlp.*", method="hqq", bits=3),
                          PlanRule("re:layers\\.0\\.self_attn\\.o_proj$", keep=True)))
    out = tmp_path / "q"
    model = make_tiny()
    result = run_quantize(model, make_config("gptq"), plan, calib(), output_dir=out)
    assert result.configs["model.layers.0.mlp.up_proj"].method == "hqq"
    assert result.configs["model.layers.0.self_attn.o_proj"] is None
    assert result.configs["model.layers.1.self_attn.o_proj"].method == "gptq"
    assert_close(_logits(_load(out)), _logits(model), rtol=0, atol=0)


def test_sensitivity_plan_meets_its_budget():
    model = make_tiny()
    plan = Plan("sensitivity", sensitivity=True, budget_bpw=3.8)
    events = list(quantize_steps(model, make_config("rtn", bits=3), plan, calib()))
    summary = events[-1]
    assert 3.25 < summary.bits_per_weight <= 3.8
    widths = {e.bits for e in events if isinstance(e, LayerQuantized)}
    assert 3 in widths and len(widths) > 1
    assert any(isinstance(e, CalibrationProgress) and e.stage == "sensitivity" for e in events)


def test_keep_everything_is_refused():
    plan = Plan("all", (PlanRule("*", keep=True),))
    with pytest.raises(BadInput, match="nothing to quantize"):
        run_quantize(make_tiny(), make_config("rtn"), plan, calib())


def test_not_enough_memory_says_how_much(monkeypatch):
    from qdesk.core.errors import OutOfResources
    from qdesk.core.models import device

    monkeypatch.setattr(device, "available_memory_bytes", lambda kind: 1000)
    with pytest.raises(OutOfResources, match=r"needs about .* GiB"):
        run_quantize(make_tiny(), make_config("gptq"), None, calib())


def test_disk_full_is_out_of_resources_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    from qdesk.core.errors import OutOfResources

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OutOfResources, match="disk full .* MiB"):
        run_quantize(make_tiny(), make_config("rtn"), None, calib(), output_dir=tmp_path / "q")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits", [4, 3])
def test_hqq_float_zero_checkpoint_loads_with_equal_logits(tmp_path, dtype, bits):
    dense = tmp_path / "dense"
    make_tiny(seed=bits).save_pretrained(dense)
    model = _load(dense, dtype)  # loaded as transformers loads it (float32 rotary buffers)
    out = tmp_path / "q"
    result = run_quantize(model, make_config("hqq", bits=bits, zero="float"), None, calib(),
                          output_dir=out)
    qw = result.records["model.layers.0.mlp.up_proj"]
    assert qw.float_zero and not torch.equal(qw.zero, qw.zero.round())  # really fractional
    assert result.summary.bits_per_weight == pytest.approx(bits + 32 / 64)
    loaded = _load(out, dtype)
    assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = saved["config_groups"]["group_0"]["weights"]
    assert saved["format"] == "naive-quantized" and weights["zp_dtype"] == "torch.bfloat16"


def test_float_zero_in_a_mixed_plan_loads_with_equal_logits(tmp_path):
    plan = Plan("mixed", (PlanRule("*.self_attn.*", method="rtn", bits=8),))
    model = make_tiny(seed=7)
    out = tmp_path / "q"
    result = run_quantize(model, make_config("hqq", zero="float"), plan, calib(), output_dir=out)
    assert result.records["model.layers.0.mlp.up_proj"].float_zero
    assert result.records["model.layers.0.self_attn.q_proj"].zero.dtype == torch.int8
    assert_close(_logits(_load(out)), _logits(model), rtol=0, atol=0)
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    groups = list(saved["config_groups"].values())
    assert len(groups) == 2 and {g["format"] for g in groups} == {"naive-quantized"}
    assert sorted("zp_dtype" in g["weights"] for g in groups) == [False, True]


def test_unquantized_tensors_are_stored_in_the_narrowest_exact_dtype(tmp_path):
    from safetensors import safe_open

    dense = tmp_path / "dense"
    make_tiny(seed=8).to(torch.bfloat16).save_pretrained(dense)
    model = _load(dense, torch.float32)  # a bfloat16 model computed in float32
    out = tmp_path / "q"
    run_quantize(model, make_config("rtn"), None, calib(), output_dir=out)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
        assert f.get_slice("model.norm.weight").get_dtype() == "BF16"
        assert f.get_slice("model.layers.0.mlp.up_proj.weight_scale").get_dtype() == "F32"
    loaded = _load(out)  # config.json keeps float32: a plain load computes what qdesk did
    assert loaded.dtype == torch.float32
    assert_close(_logits(loaded), _logits(model), rtol=0, atol=0)
    # float32 values that bfloat16 cannot hold stay float32
    out2 = tmp_path / "q2"
    run_quantize(make_tiny(seed=8), make_config("rtn"), None, calib(), output_dir=out2)
    with safe_open(str(out2 / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "F32"


@pytest.mark.parametrize("method", ["gptq", "awq", "signround"])
def test_the_same_job_twice_gives_the_same_codes(method, monkeypatch):
    # Two runs of one job on one machine must agree: a difference between two
    # "identical" runs was once taken for a method's noise.
    monkeypatch.setenv("QDESK_THREADS", "1")
    options = {"iters": 20} if method == "signround" else {}
    codes = []
    for _ in range(2):
        result = run_quantize(make_tiny(), make_config(method, group_size=32, **options), None,
                              calib(8, 32), check=None)
        codes.append(result.records)
    assert codes[0].keys() == codes[1].keys()
    for name, qw in codes[0].items():
        other = codes[1][name]
        assert torch.equal(qw.q, other.q) and torch.equal(qw.scale, other.scale), name


@pytest.mark.parametrize("fast_bf16,expected", [(False, torch.float32), (True, torch.bfloat16)])
def test_a_bf16_model_calibrates_in_the_cpus_fast_dtype(fast_bf16, expected, monkeypatch):
    # Without bf16 instructions a CPU multiplies bf16 matrices several times slower
    # than float32 ones (5x on the AVX2 development CPU): the job's forwards run in
    # float32 there, and the model keeps its own dtype.
    from qdesk.core.quant import layerwalk

    monkeypatch.setattr(layerwalk, "_cpu_has_fast_bf16", lambda: fast_bf16)
    model = make_tiny(dtype=torch.bfloat16)
    seen = []
    model.model.layers[1].register_forward_pre_hook(lambda m, a, kw: seen.append(
        (a[0] if a else kw["hidden_states"]).dtype), with_kwargs=True)
    result = run_quantize(model, make_config("gptq", group_size=32), None, calib(), check=None)
    # the first: the model's own forward that records every layer's arguments
    assert seen[0] == torch.bfloat16 and len(seen) > 4 and set(seen[1:]) == {expected}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(0 < e < 0.5 for e in result.errors.values())


def test_gptq_dense_targets_pairs_the_streams_from_layer_one_on(monkeypatch):
    """Layer 0 sees the same inputs in both streams (cross statistics zero: plain
    GPTQ's codes); from layer 1 on the dense model's activations differ and the
    codes move, and the checkpoint still holds every Linear."""
    from qdesk.core.quant import layerwalk

    seen = []
    gather = layerwalk.gather_stats

    def spy(*args, dense_inputs=None, **kw):
        stats = gather(*args, dense_inputs=dense_inputs, **kw)
        if dense_inputs is not None:
            seen.append(max(float(s.cross.abs().max()) for s in stats.values()))
        return stats

    monkeypatch.setattr("qdesk.core.quant.steps.gather_stats", spy)
    plain = run_quantize(make_tiny(), make_config("gptq", group_size=32), None, calib(8, 32),
                         check=None)
    dense = run_quantize(make_tiny(), make_config("gptq", group_size=32, dense_targets=True),
                         None, calib(8, 32), check=None)
    assert len(seen) == 2 and seen[0] == 0.0 and seen[1] > 0.0
    assert dense.records.keys() == plain.records.keys()
    layer0 = [n for n in plain.records if ".layers.0." in n]
    layer1 = [n for n in plain.records if ".layers.1." in n]
    assert all(torch.equal(plain.records[n].q, dense.records[n].q) for n in layer0)
    assert any(not torch.equal(plain.records[n].q, dense.records[n].q) for n in layer1)
