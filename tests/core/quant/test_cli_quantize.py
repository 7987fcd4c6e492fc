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
    (["--method", "gptq", "--iters", "5"], "--iters applies to --method signround"),
    (["--method", "awq", "--act-weighted"], "--act-weighted applies to --method rtn or gptq"),
    (["--method", "rtn", "--dense-targets"], "--dense-targets applies to --method gptq or"),
    (["--asym", "--narrow-grid"], "--narrow-grid applies to symmetric"),
    (["--method", "signround", "--iters", "-3"], "SignRound iterations must be"),
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


def test_the_self_check_closes_the_output(tiny_folder, tmp_path, capsys):
    assert _quantize(tiny_folder, tmp_path / "q", "--method", "gptq", "--calib-samples", "16",
                     "--calib-tokens", "64") == 0  # GPTQ on 128 tokens overfits: worse than RTN
    err = capsys.readouterr().err.splitlines()
    done = next(i for i, line in enumerate(err) if line.startswith("done: "))
    assert err[done + 1].startswith("self-check on heldout (8 windows, 504 tokens, ")
    assert "mean KLD" in err[done + 1] and "plain RTN of the same format" in err[done + 1]
    assert main(["info", str(tmp_path / "q"), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["quantization"]["self_check"]
    assert check["plausible"] and check["windows"] == 8


def test_no_self_check_flag(tiny_folder, tmp_path, capsys):
    assert _quantize(tiny_folder, tmp_path / "q", "--no-self-check", "--json") == 0
    out = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert out[-1]["check"] is None and "SelfCheck" not in [e["event"] for e in out]


def test_an_implausible_result_is_a_loud_line(tiny_folder, tmp_path, capsys, monkeypatch):
    from qdesk.core.quant import selfcheck

    monkeypatch.setattr(selfcheck, "KLD_LIMIT", 0.0)  # any result is "broken" now
    assert _quantize(tiny_folder, tmp_path / "q", "--method", "hqq") == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("qdesk: WARNING: implausible result: mean KLD ")
    assert json.loads((tmp_path / "q" / "qdesk.json").read_text())["self_check"]["plausible"] is False


@pytest.fixture(scope="module")
def tiny_gguf(tiny_folder, tmp_path_factory):
    from qdesk.core.models.hf_to_gguf import convert_hf_folder

    return convert_hf_folder(tiny_folder, tmp_path_factory.mktemp("gguf") / "tiny-q8.gguf", "q8_0")


def test_a_gguf_needs_from_quantized(tiny_gguf, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path / "data"))  # its dense copy goes here
    out = tmp_path / "q"
    assert _quantize(tiny_gguf, out) == 2
    err = capsys.readouterr().err
    assert "is a Q8_0 GGUF file, already quantized; pass --from-quantized" in err
    assert not out.exists() and not (tmp_path / "data").exists()  # refused before loading
    assert _quantize(tiny_gguf, out, "--from-quantized", "--method", "hqq") == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"note: {tiny_gguf}: quantizing the dequantized dense copy")
    assert err[-1] == "note: started from Q8_0 GGUF tiny-q8.gguf weights"
    recipe = json.loads((out / "qdesk.json").read_text())
    assert recipe["source_quantization"] == "Q8_0 GGUF tiny-q8.gguf"
    assert recipe["self_check"]["plausible"]


def test_the_core_refuses_a_dense_copy_of_a_quantized_file_unless_asked(tiny_folder):
    import dataclasses

    from quant_helpers import calib

    from qdesk.core.errors import BadInput
    from qdesk.core.models import open_model
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    loaded = open_model(str(tiny_folder), backend="hf")
    loaded.facts = dataclasses.replace(loaded.facts, source="gguf",
                                       derived_from_quantized="Q4_K GGUF x.gguf")
    with pytest.raises(BadInput, match="was dequantized from a Q4_K GGUF x.gguf: .*--from-quantized"):
        run_quantize(loaded, make_config("rtn"), None, calib(vocab=len(loaded.hf_tokenizer)))
    result = run_quantize(loaded, make_config("rtn"), None, calib(vocab=len(loaded.hf_tokenizer)),
                          from_quantized=True, check=None)
    assert result.summary.source_quantization == "Q4_K GGUF x.gguf"


def test_the_demo_needs_no_flag_and_says_where_its_weights_come_from():
    from qdesk.cli.quantize import _SOURCE_NOTES, _source_quantization
    from qdesk.core.models import resolve

    assert _source_quantization(resolve("demo"), "demo", False) == "Q4_1 GGUF (the demo's shipped file)"
    assert "4-bit group-32 grid" in _SOURCE_NOTES["demo"]


def test_a_mixed_checkpoint_loads_and_is_refused_as_a_source(tiny_folder, tmp_path, capsys):
    """Quantized attention, dense MLP (a plan keeps it): qdesk opens it with the
    logits it had in memory, and will not quantize it again, with or without
    its qdesk.json."""
    import shutil

    import torch
    from quant_helpers import calib

    from qdesk.core.errors import BadInput
    from qdesk.core.models import open_model
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.plans import PRESETS
    from qdesk.core.quant.steps import run_quantize

    loaded = open_model(str(tiny_folder), backend="hf", dtype="float32")
    out = tmp_path / "mixed"
    run_quantize(loaded, make_config("gptq", group_size=32), PRESETS["mlp-keep"],
                 calib(8, 32, vocab=len(loaded.hf_tokenizer)), output_dir=out, check=None)
    ids = loaded.hf_tokenizer("The capital of France is").input_ids
    again = open_model(str(out), backend="hf", dtype="float32")
    assert again.facts.quantization["plan"] == "mlp-keep"
    torch.testing.assert_close(torch.as_tensor(again.backend.score(ids)),
                               torch.as_tensor(loaded.backend.score(ids)), rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInput, match="already quantized"):
        run_quantize(again, make_config("rtn"), None, calib(vocab=len(loaded.hf_tokenizer)))
    assert _quantize(out, tmp_path / "q2") == 2
    assert "is a qdesk checkpoint, already quantized" in capsys.readouterr().err
    plain = tmp_path / "ct"  # the same files without qdesk.json: a compressed-tensors folder
    shutil.copytree(out, plain)
    (plain / "qdesk.json").unlink()
    assert _quantize(plain, tmp_path / "q3") == 2
    assert "is already quantized (compressed-tensors)" in capsys.readouterr().err


def test_from_quantized_on_a_plain_folder_is_bad_input(tiny_folder, tmp_path, capsys):
    assert _quantize(tiny_folder, tmp_path / "q", "--from-quantized") == 2
    assert "--from-quantized applies to a quantized .gguf file" in capsys.readouterr().err


def test_signround_from_the_cli_with_block_lines_and_self_check(tiny_folder, tmp_path, capsys):
    out = tmp_path / "q"
    assert _quantize(tiny_folder, out, "--method", "signround", "--iters", "3",
                     "--batch-size", "2") == 0
    err = capsys.readouterr().err
    assert "block 1/2: 3 iterations, output error" in err and "block 2/2" in err
    assert "signround 4-bit g64" in err and "self-check on" in err
    recipe = json.loads((out / "qdesk.json").read_text())
    assert recipe["config"]["method"] == "signround" and recipe["config"]["iters"] == 3
    assert recipe["self_check"]["rtn_mean_kld"] is not None


def test_act_weighted_and_narrow_grid_reach_the_recipe(tiny_folder, tmp_path):
    out = tmp_path / "q"
    assert _quantize(tiny_folder, out, "--act-weighted", "--narrow-grid") == 0
    config = json.loads((out / "qdesk.json").read_text())["config"]
    assert config["act_weighted"] is True and config["narrow_grid"] is True


def test_gptq_defaults_and_their_switches_reach_the_recipe(tiny_folder, tmp_path):
    """act-weighted ranges on by default, dense targets off; both can be switched."""
    for name, extra, aw, dense in (("default", (), True, False),
                                   ("switched", ("--no-act-weighted", "--dense-targets"),
                                    False, True)):
        out = tmp_path / name
        assert _quantize(tiny_folder, out, "--method", "gptq", *extra) == 0
        config = json.loads((out / "qdesk.json").read_text())["config"]
        assert config["act_weighted"] is aw and config["dense_targets"] is dense
