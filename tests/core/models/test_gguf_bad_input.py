"""Bad GGUF files: one BadInput line each, and nothing that can end the process.

Most cases are a tiny llama file (512-piece vocabulary, ~300 KB) with one value
changed the way a damaged or crafted file would have it; the rest damage the
bytes of the header itself.
"""

from __future__ import annotations

import math
import os
import shutil
import struct

import gguf
import pytest
from gguf_edit import rewrite

from qdesk.cli import main
from qdesk.core.errors import BadInput
from qdesk.core.models import gguf_probe, open_model
from qdesk.core.models.gguf_header import read_header

T = gguf.GGUFValueType
NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def small(tiny_gguf):
    return tiny_gguf("llama-spm")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("QDESK_DATA_DIR", str(folder))
    return folder


def _tokens(path):
    return gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"].contents()


# (case, fields to set, keys to drop, what the one line must say)
METADATA_CASES = [
    ("nan-eps", {"llama.attention.layer_norm_rms_epsilon": (T.FLOAT32, NAN)}, (),
     "layer_norm_rms_epsilon=nan is not a finite number"),
    ("negative-eps", {"llama.attention.layer_norm_rms_epsilon": (T.FLOAT32, -1e-5)}, (),
     "layer_norm_rms_epsilon=-1e-05 is out of range"),
    ("inf-rope-base", {"llama.rope.freq_base": (T.FLOAT32, INF)}, (),
     "rope.freq_base=inf is not a finite number"),
    ("kv-heads-not-dividing", {"llama.attention.head_count_kv": (T.UINT32, 3)}, (),
     "4 heads and 3 KV heads"),
    ("zero-kv-heads", {"llama.attention.head_count_kv": (T.UINT32, 0)}, (),
     "needs at least 1"),
    ("absurd-layer-count", {"llama.block_count": (T.UINT32, 100_000)}, (),
     "block_count=100000 is out of range"),
    ("more-layers-than-tensors", {"llama.block_count": (T.UINT32, 3)}, (),
     "lacks tensor blk.2."),
    ("odd-rope-width", {"llama.rope.dimension_count": (T.UINT32, 15)}, (),
     "rope.dimension_count=15 does not fit a head of 16"),
    ("unknown-rope-scaling", {"llama.rope.scaling.type": (T.STRING, "bogus")}, (),
     "rope.scaling.type='bogus' is not one of none, linear, yarn, longrope"),
    ("more-experts-used-than-exist", {"llama.expert_count": (T.UINT32, 2),
                                      "llama.expert_used_count": (T.UINT32, 4)}, (),
     "expert_used_count 4 exceeds expert_count 2"),
    ("experts-used-without-experts", {"llama.expert_used_count": (T.UINT32, 2)}, (),
     "expert_used_count 2 exceeds expert_count 0"),
    ("array-for-a-scalar", {"llama.context_length": (T.ARRAY, [256, 256], T.UINT32)}, (),
     "context_length is an array"),
    ("per-layer-array-too-short", {"llama.attention.head_count": (T.ARRAY, [4, 4, 4], T.UINT32)}, (),
     "head_count has 3 entries for 2 layers"),
    ("string-for-a-number", {"llama.block_count": (T.STRING, "2")}, (),
     "block_count is not an integer"),
    ("wider-than-its-tensors", {"llama.embedding_length": (T.UINT32, 128)}, (),
     "has shape"),
    ("missing-context", {}, ("llama.context_length",), "lacks llama.context_length"),
    ("missing-epsilon", {}, ("llama.attention.layer_norm_rms_epsilon",),
     "lacks llama.attention.layer_norm_rms_epsilon"),
    ("missing-vocabulary", {}, ("tokenizer.ggml.tokens",), "lacks tokenizer.ggml.tokens"),
    ("bos-outside-vocabulary", {"tokenizer.ggml.bos_token_id": (T.UINT32, 9999)}, (),
     "bos_token_id=9999 is not a token of the vocabulary"),
    ("scores-shorter-than-vocabulary",
     {"tokenizer.ggml.scores": (T.ARRAY, [0.0] * 10, T.FLOAT32)}, (),
     "tokenizer.ggml.scores does not match the vocabulary"),
    ("nan-token-score", {"tokenizer.ggml.scores": (T.ARRAY, [NAN] * 512, T.FLOAT32)}, (),
     "scores holds NaN or infinity"),
    ("bad-architecture-name", {"general.architecture": (T.STRING, "../../etc")}, (),
     "not an architecture name"),
]


@pytest.mark.parametrize("case,fields,drop,words", METADATA_CASES, ids=[c[0] for c in METADATA_CASES])
def test_bad_metadata_is_one_bad_input(case, fields, drop, words, small, tmp_path):
    path = rewrite(small, tmp_path / f"{case}.gguf", dict(fields), drop)
    with pytest.raises(BadInput) as e:
        read_header(path)
    message = str(e.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert words in message, message


def test_duplicate_token_is_refused(small, tmp_path):
    # llama.cpp asserts that every token text is unique (it would abort).
    tokens = _tokens(small)
    tokens[100] = tokens[101]
    path = rewrite(small, tmp_path / "dup.gguf",
                   {"tokenizer.ggml.tokens": (T.ARRAY, tokens, T.STRING)})
    with pytest.raises(BadInput, match="lists 1 token"):
        read_header(path)


def test_both_backends_refuse_before_loading(small, tmp_path, data_dir, capsys):
    path = rewrite(small, tmp_path / "nan.gguf",
                   {"llama.attention.layer_norm_rms_epsilon": (T.FLOAT32, NAN)})
    for backend in ("llamacpp", "hf"):
        with pytest.raises(BadInput, match="not a finite number"):
            open_model(str(path), backend=backend)
    assert not (data_dir / "converted").exists() or not any((data_dir / "converted").iterdir())
    assert main(["chat", str(path), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qdesk: error:") and "not a finite number" in err[0]


def _header_bytes(path) -> bytearray:
    return bytearray(path.read_bytes())


def test_damaged_header_bytes(small, tmp_path):
    data = _header_bytes(small)
    cases = {
        "empty": (b"", "not a GGUF file"),
        "garbage": (b"garbage" * 100, "not a GGUF file"),
        "version": (data[:4] + struct.pack("<I", 99) + data[8:], "unsupported version (version 99"),
        "tensor-count": (data[:8] + struct.pack("<Q", 1 << 40) + data[16:], "claims 1099511627776 tensors"),
        "kv-count": (data[:16] + struct.pack("<Q", 1 << 40) + data[24:], "metadata entries"),
        "cut-in-metadata": (data[:2000], "truncated or damaged"),
        "cut-in-data": (data[: len(data) - 1000], "truncated GGUF file (tensor"),
        # The first key's length, made huge: the string runs past the end.
        "key-length": (data[:24] + struct.pack("<Q", 1 << 60) + data[32:], "damaged"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(bytes(content))
        with pytest.raises(BadInput) as e:
            read_header(path)
        assert words in str(e.value), (name, str(e.value))


def test_a_crash_in_llama_cpp_ends_the_probe_not_this_process(small, tmp_path, data_dir):
    # The header checks would refuse this file; the probe is tried on it directly,
    # as it would meet a file whose flaw no check knows.
    path = rewrite(small, tmp_path / "nan.gguf",
                   {"llama.attention.layer_norm_rms_epsilon": (T.FLOAT32, NAN)})
    with pytest.raises(BadInput) as e:
        gguf_probe.ensure_probed(path)
    message = str(e.value)
    assert message.startswith(f"{path}: llama.cpp crashes on this file (SIGABRT")
    assert "GGML_ASSERT(eps >= 0.0f) failed" in message
    assert "\n" not in message
    assert not (data_dir / gguf_probe.CACHE_NAME).exists()  # a bad verdict is not cached


def test_probe_verdict_is_cached_by_file_identity(small, tmp_path, data_dir, monkeypatch):
    path = tmp_path / "copy.gguf"
    shutil.copy(small, path)
    gguf_probe.ensure_probed(path)
    cache = data_dir / gguf_probe.CACHE_NAME
    assert cache.is_file()

    def no_child(*a, **k):
        raise AssertionError("probed again")

    monkeypatch.setattr(gguf_probe.subprocess, "Popen", no_child)
    gguf_probe.ensure_probed(path)  # the same file: no child process
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="probed again"):
        gguf_probe.ensure_probed(path)  # changed: probed again
    monkeypatch.undo()
    cache.write_text("{damaged")  # a damaged cache costs a probe, not an error
    gguf_probe.ensure_probed(path)


def test_unknown_architecture_is_refused_naming_it(small, tmp_path, data_dir):
    path = rewrite(small, tmp_path / "unknown.gguf", arch="qdeskunknown")
    with pytest.raises(BadInput, match="llama.cpp does not know the architecture 'qdeskunknown'"):
        open_model(str(path), backend="llamacpp")
    with pytest.raises(BadInput, match="not 'qdeskunknown'"):
        open_model(str(path), backend="hf")


def test_architecture_only_llama_cpp_runs(tiny_gguf, data_dir):
    path = str(tiny_gguf("granite-spm"))
    loaded = open_model(path, backend="llamacpp")
    try:
        assert loaded.facts.architecture == "granite" and loaded.facts.layers == 2
        logits = loaded.backend.score([1, 5, 6])
        assert logits.shape == (3, 512)
    finally:
        loaded.close()
    with pytest.raises(BadInput) as e:
        open_model(path, backend="hf")
    assert "transformers backend cannot use this file" in str(e.value)
    assert "not 'granite'" in str(e.value) and "llama, qwen2" in str(e.value)


def test_rope_scaling_the_dense_copy_cannot_reproduce(tiny_gguf, data_dir):
    path = str(tiny_gguf("llama3rope-spm"))
    assert "rope_freqs.weight" in read_header(path).tensor_types
    loaded = open_model(path, backend="llamacpp")
    loaded.close()
    with pytest.raises(BadInput, match="RoPE frequency factors"):
        open_model(path, backend="hf")


def test_missing_tensor_leaves_no_dense_copy(small, tmp_path, data_dir):
    path = rewrite(small, tmp_path / "no-down.gguf",
                   tensor_filter=lambda name: name != "blk.1.ffn_down.weight")
    with pytest.raises(BadInput, match="lacks model.layers.1.mlp.down_proj.weight"):
        open_model(str(path), backend="hf")
    assert not any((data_dir / "converted").iterdir())
    with pytest.raises(BadInput, match="llama.cpp cannot load it: .*blk.1.ffn_down.weight"):
        open_model(str(path), backend="llamacpp")


def test_the_reported_file_q4_1_with_nan_epsilon(demo_gguf_path, tmp_path, data_dir):
    """Issue #9: the shipped Q4_1 file with a NaN epsilon aborted llama.cpp (exit 134)."""
    key = b"llama.attention.layer_norm_rms_epsilon"
    data = bytearray(demo_gguf_path.read_bytes())
    at = data.index(key) + len(key)
    assert struct.unpack_from("<I", data, at)[0] == int(T.FLOAT32)
    struct.pack_into("<f", data, at + 4, NAN)
    path = tmp_path / "nan-eps.Q4_1.gguf"
    path.write_bytes(bytes(data))
    for backend in ("llamacpp", "hf"):
        with pytest.raises(BadInput, match="layer_norm_rms_epsilon=nan is not a finite number"):
            open_model(str(path), backend=backend)
    # And had no check known it, the test load would have taken the abort:
    with pytest.raises(BadInput, match=r"crashes on this file \(SIGABRT: GGML_ASSERT\(eps >= 0.0f\)"):
        gguf_probe.ensure_probed(path)
