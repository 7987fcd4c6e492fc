"""Model folders qdesk cannot or must not run: an architecture transformers does
not know is named in one line; a model's own Python code runs only when the
user opts in."""

from __future__ import annotations

import json

import pytest
from families import tiny_folder

from qdesk.cli import main

# Code a model folder ships (auto_map): importing it leaves a mark.
REMOTE_CODE = '''
import pathlib
pathlib.Path({marker!r}).write_text("remote code ran")
from transformers import LlamaConfig


class MarkConfig(LlamaConfig):
    model_type = "qdesk_mark"
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_folder("llama", tmp_path_factory.mktemp("src") / "tiny")


def _retyped(tiny, folder, **changes):
    import shutil

    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qdesk: error: "), err
    return err[0]


@pytest.mark.parametrize("command", ["info", "quantize"])
def test_an_unknown_architecture_is_named(tiny, tmp_path, capsys, command):
    folder = _retyped(tiny, tmp_path / "m", model_type="zorblax",
                      architectures=["ZorblaxForCausalLM"])
    argv = [command, str(folder)] + (["-o", str(tmp_path / "q")] if command == "quantize" else [])
    assert main(argv) == 2
    line = _one_error(capsys)
    assert "unsupported architecture 'zorblax' (ZorblaxForCausalLM): transformers 5." in line
    assert "has no causal language model of that type" in line


def test_remote_code_does_not_run_without_the_flag(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    marker = tmp_path / "ran.txt"
    folder = _retyped(tiny, tmp_path / "m", model_type="qdesk_mark",
                      architectures=["MarkForCausalLM"],
                      auto_map={"AutoConfig": "mark.MarkConfig"})
    (folder / "mark.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    assert main(["info", str(folder)]) == 2
    line = _one_error(capsys)
    assert "architecture 'qdesk_mark' (MarkForCausalLM) is not part of transformers" in line
    assert "ships its own Python code (auto_map)" in line and "--trust-remote-code" in line
    assert not marker.exists()
    assert main(["quantize", str(folder), "-o", str(tmp_path / "q")]) == 2
    assert "--trust-remote-code" in _one_error(capsys)
    assert not marker.exists() and not (tmp_path / "q").exists()
    # opted in, the code runs (this folder's model then fails to load: one line, exit 2)
    assert main(["info", str(folder), "--trust-remote-code"]) == 2
    assert marker.read_text() == "remote code ran"
    _one_error(capsys)


def test_a_folder_without_model_type(tiny, tmp_path, capsys):
    folder = _retyped(tiny, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["info", str(folder)]) == 2
    assert "config.json names no model_type" in _one_error(capsys)


def _saved(model, folder, tok):
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_the_load_estimate_counts_a_large_vocabularys_logits(tmp_path, monkeypatch):
    """Gemma 3's 262k vocabulary: a 512-token scoring forward holds 1 GiB of
    logits, more than this tiny model's weights; the estimate says so."""
    from families import demo_tokenizer, tiny_model

    from qdesk.core.errors import OutOfResources
    from qdesk.core.models import device, open_model

    tok = demo_tokenizer()
    folder = _saved(tiny_model("gemma3", vocab_size=262_144), tmp_path / "g", tok)
    weights = sum(p.numel() for p in tiny_model("gemma3", vocab_size=262_144).parameters()) * 4
    logits = 2 * 512 * 262_144 * 4
    monkeypatch.setattr(device, "available_memory_bytes",
                        lambda kind: int(weights * 1.15) + 256 * 2**20 + logits // 2)
    with pytest.raises(OutOfResources, match=r"needs about 1\.3\d GiB of cpu memory"):
        open_model(str(folder), backend="hf", dtype="float32")
    monkeypatch.setattr(device, "available_memory_bytes",
                        lambda kind: int(weights * 1.15) + 256 * 2**20 + logits + 2**20)
    assert open_model(str(folder), backend="hf", dtype="float32").facts.vocab_size == 262_144


def test_a_tied_head_stored_twice_is_counted_once(tmp_path):
    from families import demo_tokenizer, tiny_model
    from safetensors.torch import load_file, save_file

    from qdesk.core.models import open_model

    tok = demo_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    folder = _saved(model, tmp_path / "t", tok)
    state = load_file(str(folder / "model.safetensors"))
    assert "lm_head.weight" not in state  # transformers writes a tied head once
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()  # some exporters do not
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    loaded = open_model(str(folder), backend="hf", dtype="float32")
    assert loaded.facts.parameters == sum(p.numel() for p in model.parameters())
