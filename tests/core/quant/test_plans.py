from __future__ import annotations

import pytest

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import GPTQConfig
from qdesk.core.quant.plans import PRESETS, Plan, PlanRule, load_plan

WIDTHS = {f"model.layers.0.{n}": w for n, w in [
    ("self_attn.q_proj", 576), ("self_attn.k_proj", 576), ("self_attn.v_proj", 576),
    ("self_attn.o_proj", 576), ("mlp.gate_proj", 576), ("mlp.up_proj", 576),
    ("mlp.down_proj", 1536)]}


def test_presets():
    base = GPTQConfig(bits=4, group_size=64)
    assert all(c == base for c in PRESETS["uniform"].resolve(WIDTHS, base).values())
    attn = PRESETS["attn-keep"].resolve(WIDTHS, base)
    assert attn["model.layers.0.self_attn.o_proj"] is None and attn["model.layers.0.mlp.up_proj"]
    mlp = PRESETS["mlp-keep"].resolve(WIDTHS, base)
    assert mlp["model.layers.0.mlp.down_proj"] is None and mlp["model.layers.0.self_attn.q_proj"]
    qk = PRESETS["qk-keep"].resolve(WIDTHS, base)
    assert qk["model.layers.0.self_attn.k_proj"] is None
    assert qk["model.layers.0.self_attn.v_proj"].bits == 8
    assert qk["model.layers.0.self_attn.o_proj"].bits == 4
    assert load_plan("sensitivity", budget_bpw=4.5).budget_bpw == 4.5


def test_indivisible_group_size():
    base = GPTQConfig(bits=4, group_size=128)
    with pytest.raises(BadInput, match=r"does not divide the input width 576 of model\.layers\.0\.self_attn\.q_proj"):
        Plan().resolve(WIDTHS, base)
    keep = Plan(on_indivisible="keep").resolve(WIDTHS, base)
    assert keep["model.layers.0.self_attn.q_proj"] is None
    assert keep["model.layers.0.mlp.down_proj"].group_size == 128
    with pytest.raises(BadInput):
        Plan(on_indivisible="sometimes")


def test_plan_files(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("name: mine\non_indivisible: per-channel\nrules:\n"
                 "  - {match: '*.mlp.down_proj', bits: 8}\n"
                 "  - {match: 're:q_proj$', keep: true}\n"
                 "  - {match: '*.o_proj', method: hqq, bits: 3}\n")
    plan = load_plan(str(y))
    r = plan.resolve(WIDTHS, GPTQConfig(bits=4, group_size=64))
    assert plan.name == "mine"
    assert r["model.layers.0.mlp.down_proj"].bits == 8
    assert r["model.layers.0.self_attn.q_proj"] is None
    assert r["model.layers.0.self_attn.o_proj"].method == "hqq"
    j = tmp_path / "p.json"
    j.write_text('{"rules": [{"match": "*", "bits": 2}]}')
    assert load_plan(str(j)).rules == (PlanRule("*", bits=2),)


@pytest.mark.parametrize("text,message", [
    ("rules: 3", "mapping with a 'rules' list"),
    ("rules:\n  - {match: '*', colour: red}", "rule 1"),
    ("rules:\n  - {match: 're:(', keep: true}", "not a regular expression"),
    ("rules: [\n", "not a readable plan"),
])
def test_bad_plan_files(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(BadInput, match=message):
        load_plan(str(f))
