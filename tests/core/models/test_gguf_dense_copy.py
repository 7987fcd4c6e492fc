"""The dense copy of a GGUF file: transformers' own tensors, made once, streamed in shards."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from qdesk.core.models import dense_folder, open_model
from qdesk.core.models.dense_folder import materialize_gguf, quantized_source


def _state(folder):
    from safetensors import safe_open

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys()})
    return out


# llama: q/k rows un-permuted; gemma2: norms stored as 1 + w; qwen3_moe: experts stacked.
# (512-token vocabularies where the converter takes one: transformers reads a 49k
# vocabulary with gguf-py for about 10 s.)
@pytest.mark.parametrize("family", ["llama-spm", "gemma2", "qwen3_moe"])
def test_weights_equal_transformers_own_gguf_loader(family, tiny_gguf, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = tiny_gguf(family)
    folder = materialize_gguf(path, tmp_path / "dense")
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, config=config, dtype=torch.bfloat16
    )
    theirs = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or
              not config.tie_word_embeddings}
    ours = _state(folder)
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name


def test_large_models_are_written_in_shards(tiny_gguf, tmp_path, monkeypatch):
    path = tiny_gguf("qwen3")
    single = _state(materialize_gguf(path, tmp_path / "single"))
    monkeypatch.setattr(dense_folder, "SHARD_BYTES", 60_000)  # about one layer
    folder = materialize_gguf(path, tmp_path / "sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) >= 3 and set(index["weight_map"].values()) == set(shards)
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    sharded = _state(folder)
    assert set(sharded) == set(single)
    assert all((sharded[k] == single[k]).all() for k in single)


def test_a_changed_file_is_converted_again(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "model.gguf"
    shutil.copy(tiny_gguf("gemma2"), path)
    first = open_model(str(path), backend="hf")
    first.close()
    converted = tmp_path / "data" / "converted"
    (one,) = converted.iterdir()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = open_model(str(path), backend="hf")
    second.close()
    assert {p.name for p in converted.iterdir()} == {one.name, second.facts.path.split("/")[-1]}
    assert len(list(converted.iterdir())) == 2  # and no temporary folder left over


def test_dense_copy_of_a_quantized_file(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path / "data"))
    path = str(tiny_gguf("qwen3", "q8_0"))
    hf = open_model(path, backend="hf", dtype="float32")
    gguf = open_model(path, backend="llamacpp")
    try:
        assert hf.facts.derived_from_quantized == "Q8_0 GGUF qwen3-q8_0.gguf"
        source = json.loads((tmp_path / "data" / "converted").glob("*/qdesk_source.json")
                            .__next__().read_text())
        assert source["quantized_types"] == ["Q8_0"] and source["architecture"] == "qwen3"
        ids = [int(i) for i in np.random.default_rng(1).integers(0, hf.facts.vocab_size, 40)]
        a, b = gguf.backend.score(ids), hf.backend.score(ids)
        # llama.cpp also rounds activations to 8 bits for Q8_0 weights.
        assert np.mean(a.argmax(-1) == b.argmax(-1)) >= 0.9
        assert np.abs(a - b).max() < 0.1
    finally:
        hf.close()
        gguf.close()


def test_quantized_source_of_other_folders(tmp_path):
    assert quantized_source(tmp_path) is None  # no qdesk_source.json: an ordinary folder
    (tmp_path / dense_folder.SOURCE_FILE).write_text("{damaged")
    assert quantized_source(tmp_path) is None
    (tmp_path / dense_folder.SOURCE_FILE).write_text(
        json.dumps({"converted_from": "/x/m.gguf", "gguf_types": {"F32": 3, "BF16": 9}}))
    assert quantized_source(tmp_path) is None  # dense types only: nothing was quantized
