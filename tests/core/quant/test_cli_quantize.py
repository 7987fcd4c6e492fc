"""``qdesk quantize`` end to end on a tiny model folder: JSON events, exit codes."""

from __future__ import annotations

import json

import pytest
from quant_helpers import make_tiny

from qdesk.cli import main


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from transformers import AutoTokenizer

    from qdesk.core.models.demo import ensure_demo_model

    folder = tmp_path_factory.mktemp("models") / "tiny"
    tok = AutoTokenizer.from_pretrained(str(ensure_demo_model()))
    make_tiny(vocab_size=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _quantize(folder, out, *extra):
    return main(["quantize", str(folder), "--calib", "reasoning", "--calib-samples", "4",
                 "--calib-tokens", "32", "-o", str(out), *extra])


def test_quantize_json_events_then_info(tiny_folder, tmp_path, capsys):
    out = tmp_path / "q"
    rc = _quantize(tiny_folder, out, "--method", "gptq", "--bits", "3", "--group-size", "32",
                   "--asym", "--json")
    assert rc == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds.count("LayerQuantized") == 14 and kinds[-1] == "QuantizeSummary"
    assert lines[-1]["bits_per_weight"] == pytest.approx(3 + 19 / 32, abs=1e-4)
    assert (out / "qdesk.json").is_file() and (out / "model.safetensors").is_file()
    assert main(["info", str(out), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["source"] == "qdesk"
    assert facts["quantization"]["method"] == "gptq" and facts["quantization"]["bits"] == 3


def test_progress_lines_on_stderr(tiny_folder, tmp_path, capsys):
    assert _quantize(tiny_folder, tmp_path / "q", "--method", "hqq", "--plan", "attn-keep") == 0
    err = capsys.readouterr().err
    assert "[1/6] model.layers.0.mlp.gate_proj: hqq 4-bit g64" in err
    assert "self_attn.q_proj: kept" in err and "done: 6 layers quantized, 8 kept" in err


@pytest.mark.parametrize("args,message", [
    (["--method", "squeeze"], "unknown method"),
    (["--bits", "5"], "bits must be one of"),
    (["--group-size", "48"], "does not divide the input width 64 of model.layers.0"),
    (["--plan", "nonsense"], "neither a preset"),
    (["--calib", "missing.txt"], "neither a built-in"),
    (["--method", "rtn", "--hqq-zero", "float"], "--hqq-zero applies to --method hqq"),
    (["--method", "gptq", "--clip-search"], "--clip-search applies to --method rtn"),
])
def test_bad_input_exits_2_with_one_line(tiny_folder, tmp_path, capsys, args, message):
    out = tmp_path / "q"
    assert _quantize(tiny_folder, out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_too_small_calibration_file(tiny_folder, tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("A short note.\n\nAnother one.")
    assert main(["quantize", str(tiny_folder), "--calib", str(small), "-o", str(tmp_path / "q")]) == 2
    assert "fewer than the 128 x 512" in capsys.readouterr().err


def test_existing_output_and_quantized_model_are_refused(tiny_folder, tmp_path, capsys):
    out = tmp_path / "q"
    out.mkdir()
    assert _quantize(tiny_folder, out) == 2
    assert "exists" in capsys.readouterr().err
    done = tmp_path / "done"
    assert _quantize(tiny_folder, done) == 0
    assert _quantize(done, tmp_path / "again") == 2
    assert "already quantized" in capsys.readouterr().err


def test_hqq_float_zero_checkpoint_from_the_cli(tiny_folder, tmp_path, capsys):
    out = tmp_path / "q"
    assert _quantize(tiny_folder, out, "--method", "hqq", "--hqq-zero", "float", "--json") == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["bits_per_weight"] == pytest.approx(4.5, abs=1e-4)
    recipe = json.loads((out / "qdesk.json").read_text())
    assert recipe["config"]["zero"] == "float"
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"]["method"] == "hqq"


@pytest.mark.parametrize("flags,expected", [
    (["--asym", "--clip-search"], True), (["--no-clip-search"], False), (["--asym"], False),
])
def test_rtn_clip_search_flag_reaches_the_recipe(tiny_folder, tmp_path, flags, expected):
    out = tmp_path / "q"
    assert _quantize(tiny_folder, out, "--method", "rtn", *flags) == 0
    assert json.loads((out / "qdesk.json").read_text())["config"]["clip_search"] is expected
