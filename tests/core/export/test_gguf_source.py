"""The export's GGUF reader gives what gguf-py's reader gives (every field with
its types and contents, every tensor's type, shape and data in the same numpy
view), and refuses a damaged header with one BadInput."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from qdesk.core.errors import BadInput
from qdesk.core.export.gguf_io import open_reader


def _write_sample(path):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_string("tokenizer.chat_template", "{{ messages }} 今天")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "天气", " b"])
    w.add_array("tokenizer.ggml.merges", ["a b", "天 气"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.0, -3.0])
    w.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1])
    rows = rng.standard_normal((4, 64)).astype(np.float32)
    w.add_tensor("f32", rows)
    w.add_tensor("f16", rows.astype(np.float16))
    w.add_tensor("i32", np.arange(12, dtype=np.int32).reshape(3, 4))
    for name in ("BF16", "Q4_0", "Q8_0", "Q5_0"):
        qtype = gguf.GGMLQuantizationType[name]
        w.add_tensor(name.lower(), gguf.quants.quantize(rows, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_fields_and_tensors_are_gguf_pys(tmp_path):
    path = tmp_path / "s.gguf"
    _write_sample(path)
    theirs, ours = gguf.GGUFReader(str(path)), open_reader(path)
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(fields) == list(ours.fields)
    for key, f in fields.items():
        assert ours.fields[key].types == f.types, key
        assert ours.get_field(key).contents() == f.contents(), key
    assert ours.get_field("tokenizer.ggml.merges").contents() == ["a b", "天 气"]
    assert ours.get_field("missing") is None
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(theirs.tensors, ours.tensors):
        assert b.tensor_type == a.tensor_type and b.shape.tolist() == a.shape.tolist()
        assert (b.n_elements, b.n_bytes) == (a.n_elements, a.n_bytes)
        assert b.data.dtype == a.data.dtype and b.data.shape == a.data.shape, a.name
        assert np.array_equal(b.data, a.data), a.name


def test_a_damaged_header_is_one_bad_input(tmp_path):
    path = tmp_path / "s.gguf"
    _write_sample(path)
    raw = bytearray(path.read_bytes())
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(raw[:200])
    with pytest.raises(BadInput, match="truncated"):
        open_reader(cut)
    # the first token's length claims more bytes than the file has
    at = raw.index(b"<s>") - 8
    raw[at:at + 8] = (1 << 40).to_bytes(8, "little")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(raw)
    with pytest.raises(BadInput):
        open_reader(bad)
    text = bytearray(path.read_bytes())
    at = text.index("天气".encode())
    text[at] = 0xFF  # no longer UTF-8
    bad.write_bytes(text)
    with pytest.raises(BadInput, match="UTF-8"):
        open_reader(bad)
