"""Every bad model argument is one BadInput with a clear message."""

import json
import shutil
import struct

import pytest

from qdesk.core.errors import BadInput
from qdesk.core.models import open_model, resolve
from qdesk.core.models.gguf_header import read_header
from qdesk.core.models.safetensors_check import read_safetensors_header


def test_missing_path(tmp_path):
    with pytest.raises(BadInput, match="no such file or folder"):
        resolve(str(tmp_path / "nothing-here"))
    with pytest.raises(BadInput, match="no such file or folder"):
        resolve(str(tmp_path / "model.gguf"))


def test_folder_without_config(tmp_path):
    with pytest.raises(BadInput, match="no config.json"):
        resolve(str(tmp_path))


def test_reference_kinds(tmp_path, demo_gguf_path):
    assert resolve("demo").kind == "demo"
    assert resolve(str(demo_gguf_path)).kind == "gguf"
    ref = resolve("HuggingFaceTB/SmolLM2-135M-Instruct@main")
    assert (ref.kind, ref.hub_id, ref.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "main")
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)).kind == "hf"
    (tmp_path / "qdesk.json").write_text("{}")
    assert resolve(str(tmp_path)).kind == "qdesk"
    with pytest.raises(BadInput, match="not a model"):
        resolve("not a model at all")


def _llama_folder(tmp_path, model_type="llama"):
    config = {
        "model_type": model_type, "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 128,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_garbage_safetensors(tmp_path):
    folder = _llama_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(BadInput, match="damaged or truncated safetensors"):
        open_model(str(folder))


def test_truncated_safetensors(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": np.zeros((64, 64), dtype=np.float32)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated safetensors"):
        read_safetensors_header(path)
    header = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(BadInput, match="wrong size"):
        read_safetensors_header(path)


def test_pickle_only_folder_is_refused(tmp_path):
    folder = _llama_folder(tmp_path)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(BadInput, match="safetensors only"):
        open_model(str(folder))


def test_unsupported_architecture(tmp_path):
    folder = _llama_folder(tmp_path, model_type="resnet")
    with pytest.raises(BadInput, match="unsupported architecture 'resnet'"):
        open_model(str(folder))


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BadInput, match="not readable JSON"):
        open_model(str(tmp_path))


def test_garbage_gguf(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(BadInput, match="not a GGUF file"):
        read_header(path)
    with pytest.raises(BadInput, match="not a GGUF file"):
        open_model(str(path))


def test_truncated_gguf(tmp_path, demo_gguf_path):
    path = tmp_path / "cut.gguf"
    with open(demo_gguf_path, "rb") as f:
        path.write_bytes(f.read(40_000_000))
    with pytest.raises(BadInput, match="truncated|damaged"):
        open_model(str(path))
    path.write_bytes(demo_gguf_path.read_bytes()[:2000])  # cut inside the metadata
    with pytest.raises(BadInput, match="damaged|truncated"):
        read_header(path)


def test_unsupported_gguf_architecture(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # A header with almost nothing in it: refused by the first key llama.cpp needs.
    with pytest.raises(BadInput, match="GGUF metadata lacks gpt2.context_length"):
        open_model(str(path))
    with pytest.raises(BadInput, match="GGUF metadata lacks gpt2.context_length"):
        open_model(str(path), backend="hf")


def test_hub_id_without_network():
    with pytest.raises(BadInput, match="cannot download it"):
        open_model("qdesk-test-org/no-such-model-offline")


def test_llamacpp_backend_needs_a_gguf(tmp_path):
    folder = _llama_folder(tmp_path)
    with pytest.raises(BadInput, match="needs a .gguf file"):
        open_model(str(folder), backend="llamacpp")
    with pytest.raises(BadInput, match="unknown backend"):
        open_model(str(folder), backend="vllm")


def test_gguf_copy_keeps_the_original(tmp_path, demo_gguf_path):
    copy = tmp_path / "demo.gguf"
    shutil.copy(demo_gguf_path, copy)
    header = read_header(copy)
    assert header.architecture == "llama" and header.n_layers == 30
    assert copy.stat().st_size == demo_gguf_path.stat().st_size


def test_refuses_a_model_that_does_not_fit_in_memory(monkeypatch):
    from qdesk.core.errors import OutOfResources
    from qdesk.core.models import device

    # Pretend the machine has 64 MiB free: the 135M-parameter demo needs more.
    monkeypatch.setattr(device, "available_memory_bytes", lambda _device: 64 * 2**20)
    with pytest.raises(OutOfResources, match=r"needs about .* GiB of cpu memory to load; 0.06 GiB is free"):
        open_model("demo")
    with pytest.raises(OutOfResources, match="needs about"):
        open_model("demo", backend="llamacpp")


def test_gguf_on_the_transformers_backend_is_dequantized_once(tmp_path, monkeypatch, demo_gguf_path):
    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path))
    loaded = open_model(str(demo_gguf_path), backend="hf")
    try:
        q_proj = loaded.model.model.layers[0].self_attn.q_proj
        assert type(q_proj).__name__ == "Linear"  # plain dense weights, not a GGUF module
        assert loaded.facts.backend == "hf" and loaded.facts.source == "gguf"
        (folder,) = (tmp_path / "converted").iterdir()
        assert (folder / "model.safetensors").is_file()
        assert not [p for p in (tmp_path / "converted").iterdir() if p.name.startswith(".")]
    finally:
        loaded.close()
