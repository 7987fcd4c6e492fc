"""The memory estimate the sidebar shows before loading: from headers and file
sizes only; a hostile header means "not known", never a crash."""

from __future__ import annotations

import json
import struct

from qdesk.core.load_estimate import estimate_load, safetensors_parameters


def _safetensors(path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_a_folder_is_counted_from_its_headers(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    _safetensors(tmp_path / "model.safetensors",
                 {"a": {"dtype": "BF16", "shape": [1000, 1000], "data_offsets": [0, 2]},
                  "__metadata__": {"format": "pt"}}, b"\0\0")
    est = estimate_load(str(tmp_path))
    assert est.need_bytes == int(1_000_000 * 4 * 1.15) + 256 * 2**20
    assert est.free_bytes > 0 and est.fits is True
    assert "1M parameters" in est.basis


def test_hostile_headers_mean_not_known(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    assert estimate_load(str(tmp_path)).need_bytes is None
    _safetensors(f, {"a": {"dtype": "F32", "shape": [-5, 3]}})
    assert estimate_load(str(tmp_path)).need_bytes is None
    _safetensors(f, {"a": {"dtype": "F32", "shape": "nonsense"}})
    assert estimate_load(str(tmp_path)).need_bytes is None


def test_gguf_hub_and_bad_references(tmp_path):
    g = tmp_path / "m.gguf"
    g.write_bytes(b"\0" * 1000)
    assert estimate_load(str(g)).basis == "GGUF file size"
    assert estimate_load("org/model").need_bytes is None
    est = estimate_load(str(tmp_path / "missing"))
    assert est.need_bytes is None and "no such file" in est.basis


def test_counting_one_file():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "x.safetensors"
        _safetensors(f, {"a": {"shape": [2, 3]}, "b": {"shape": [4]}})
        assert safetensors_parameters(f) == 10
