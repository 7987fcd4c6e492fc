"""Where an export may go, and what each format refuses (one line: why, and
what works instead); nothing is left behind by a failed export."""

from __future__ import annotations

import errno
import json

import gguf
import pytest
from export_helpers import FAST

from qdesk.core.errors import BadInput, OutOfResources
from qdesk.core.export import ExportConfig, check_outputs, export_steps, run_export


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "qdesk-" in p.name)


def test_an_existing_target_needs_force_and_force_replaces_only_qdesk_exports(tmp_path):
    user = tmp_path / "mine.gguf"
    user.write_bytes(b"GGUF not really")
    with pytest.raises(BadInput, match="exists .pass --force"):
        check_outputs(ExportConfig(format="gguf", type="F16", output=user))
    with pytest.raises(BadInput, match="not a qdesk export: qdesk will not replace it"):
        check_outputs(ExportConfig(format="gguf", type="F16", output=user, force=True))
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's")
    with pytest.raises(BadInput, match="not a qdesk export"):
        check_outputs(ExportConfig(format="bf16", output=folder, force=True))
    ckpt = tmp_path / "ckpt"  # a qdesk checkpoint is work, not an export
    ckpt.mkdir()
    (ckpt / "qdesk.json").write_text("{}")
    with pytest.raises(BadInput, match="not a qdesk export"):
        check_outputs(ExportConfig(format="compressed-tensors", output=ckpt, force=True))
    gptq = tmp_path / "gptq"
    gptq.mkdir()
    (gptq / "qdesk_export.json").write_text(json.dumps({"format": "gptq"}))
    with pytest.raises(BadInput, match="a qdesk gptq export, not bf16"):
        check_outputs(ExportConfig(format="bf16", output=gptq, force=True))
    with pytest.raises(BadInput, match="not verifiably a qdesk gptq export"):  # no manifest
        check_outputs(ExportConfig(format="gptq", output=gptq, force=True))
    (gptq / "model.safetensors").write_bytes(b"x" * 10)
    (gptq / "qdesk_export.json").write_text(json.dumps(
        {"format": "gptq", "files": {"model.safetensors": 10}}))
    check_outputs(ExportConfig(format="gptq", output=gptq, force=True))  # of its kind: allowed
    (gptq / "notes.txt").write_text("the user's")  # ... until the user adds a file
    with pytest.raises(BadInput, match="notes.txt is not as qdesk wrote it"):
        check_outputs(ExportConfig(format="gptq", output=gptq, force=True))
    with pytest.raises(BadInput, match="no such folder"):
        check_outputs(ExportConfig(format="bf16", output=tmp_path / "a" / "b"))


def test_force_replaces_a_previous_export(family_folder, open_hf, tmp_path):
    source = open_hf(family_folder("llama"))
    out = tmp_path / "m.gguf"
    run_export(source, ExportConfig(format="gguf", type="F16", output=out, verify=False))
    with pytest.raises(BadInput, match="exists"):
        run_export(source, ExportConfig(format="gguf", type="BF16", output=out, verify=False))
    run_export(source, ExportConfig(format="gguf", type="BF16", output=out, verify=False, force=True))
    assert gguf.GGUFReader(str(out)).get_field("qdesk.export.type").contents() == "BF16"
    folder = tmp_path / "bf16"
    run_export(source, ExportConfig(format="bf16", output=folder, verify=False))
    run_export(source, ExportConfig(format="bf16", output=folder, verify=False, force=True))
    assert json.loads((folder / "qdesk_export.json").read_text())["format"] == "bf16"
    assert _leftovers(tmp_path) == []


def test_bf16_shards_with_an_index(family_folder, open_hf, tmp_path):
    out = tmp_path / "sharded"
    done = run_export(open_hf(family_folder("llama")),
                      ExportConfig(format="bf16", output=out, shard_bytes=2**21, **FAST))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0].endswith(f"-of-{len(shards):05d}.safetensors")
    assert all((out / s).is_file() for s in shards)
    assert done.verification.mean_kld == 0.0


def test_architecture_llama_cpp_cannot_run_is_named(tmp_path, open_hf):
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from qdesk.core.models import ensure_demo_model

    tok = AutoTokenizer.from_pretrained(str(ensure_demo_model()))
    cfg = OPTConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                    num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32)
    OPTForCausalLM(cfg).save_pretrained(str(tmp_path / "opt"))
    tok.save_pretrained(str(tmp_path / "opt"))
    with pytest.raises(BadInput, match="llama.cpp cannot run OPTForCausalLM.*--format bf16"):
        run_export(open_hf(tmp_path / "opt"), ExportConfig(format="gguf", type="Q8_0",
                                                           output=tmp_path / "o.gguf"))
    assert _leftovers(tmp_path) == [] and not (tmp_path / "o.gguf").exists()


def test_quantized_sources_need_allow_requantize_for_lossy_types(checkpoint, open_hf, tmp_path):
    model = open_hf(checkpoint("llama", "rtn", 4, 32, True))
    for t in ("Q4_K_M", "Q8_0"):
        with pytest.raises(BadInput, match="already quantized.*--allow-requantize.*--type exact"):
            run_export(model, ExportConfig(format="gguf", type=t, output=tmp_path / "r.gguf"))
    done = run_export(model, ExportConfig(format="gguf", type="Q4_K_M", output=tmp_path / "r.gguf",
                                          allow_requantize=True, verify=False))
    assert done.tensor_types  # re-quantized from the dequantized weights, when asked
    # dequantizing to a float type loses nothing worth a flag
    f32 = run_export(model, ExportConfig(format="gguf", type="F32", output=tmp_path / "f.gguf", **FAST))
    assert f32.verification.mean_kld < 1e-6


@pytest.mark.parametrize("fmt,checkpoint_args,words", [
    ("gptq", ("rtn", 4, 32, False), ["asymmetric", "compressed-tensors"]),
    ("gptq", ("rtn", 3, 32, True), ["3-bit", "compressed-tensors"]),
    ("gguf", ("hqq", 4, 32, False, "float"), ["float", "Q4_1"]),
    ("gguf", ("rtn", 3, 32, True), ["3-bit", "--widen", "Q3_K_M"]),
])
def test_formats_refuse_what_they_cannot_hold(fmt, checkpoint_args, words, checkpoint, open_hf, tmp_path):
    method, bits, group, sym, *zero = checkpoint_args
    options = {"zero": zero[0]} if zero else {}
    model = open_hf(checkpoint("llama", method, bits, group, sym, **options))
    config = ExportConfig(format=fmt, type="exact" if fmt == "gguf" else None,
                          output=tmp_path / ("x.gguf" if fmt == "gguf" else "x"))
    with pytest.raises(BadInput) as e:
        run_export(model, config)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "model.layers.0" in str(e.value)  # names the layer
    assert list(tmp_path.iterdir()) == []


def test_widen_stores_3_bit_codes_exactly(checkpoint, open_hf, tmp_path):
    model = open_hf(checkpoint("llama", "rtn", 3, 32, True))
    done = run_export(model, ExportConfig(format="gguf", type="exact", widen=True,
                                          output=tmp_path / "w.gguf", **FAST))
    assert done.verification.weights_exact and done.tensor_types["Q4_0"] == 14
    assert any("--widen" in n for n in done.notes)


def test_dense_sources_cannot_be_exact_gptq_or_compressed(family_folder, open_hf, tmp_path):
    model = open_hf(family_folder("llama"))
    for config, words in (
        (ExportConfig(format="gguf", type="exact", output=tmp_path / "e.gguf"), "dense weights"),
        (ExportConfig(format="gptq", output=tmp_path / "g"), "quantize it first"),
        (ExportConfig(format="compressed-tensors", output=tmp_path / "c"), "quantize it first"),
    ):
        with pytest.raises(BadInput, match=words):
            run_export(model, config)


def test_disk_full_while_writing_leaves_nothing(family_folder, open_hf, tmp_path, monkeypatch):
    def full(self, tensor, tensor_endianess=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full)
    steps = export_steps(open_hf(family_folder("llama")),
                         ExportConfig(format="gguf", type="F16", output=tmp_path / "d.gguf"))
    with pytest.raises(OutOfResources, match="disk full"):
        list(steps)
    assert list(tmp_path.iterdir()) == []


def test_config_refusals():
    with pytest.raises(BadInput, match="unknown GGUF type 'Q9_K'"):
        ExportConfig(format="gguf", type="Q9_K", output="x.gguf")
    with pytest.raises(BadInput, match="needs an importance matrix"):
        ExportConfig(format="gguf", type="IQ2_XS", output="x.gguf")
    with pytest.raises(BadInput, match="applies to llama.cpp's types"):
        ExportConfig(format="gguf", type="exact", output="x.gguf", imatrix_calib="mix")
    with pytest.raises(BadInput, match="--type applies to --format gguf"):
        ExportConfig(format="bf16", type="Q4_K_M", output="x")
    with pytest.raises(BadInput, match="a .gguf file"):
        ExportConfig(format="gguf", type="F16", output="model")
    assert ExportConfig(format="gguf", type="q4_k_m", output="x.gguf").type == "Q4_K_M"
