"""Device and dtype choice."""

import json

from qdesk.core.models import device
from qdesk.core.models.device import DecodeShape, choose_placement


def test_cpu_dtype_is_measured_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path))
    shape = DecodeShape(hidden=64, intermediate=128, layers=2, kv_width=32, vocab=256)
    first = choose_placement(shape)
    assert first.device == "cpu" and first.dtype in ("bfloat16", "float32")
    assert "measured" in first.reason
    kept = json.loads((tmp_path / "cpu_dtype.json").read_text())
    assert [v["dtype"] for v in kept.values()] == [first.dtype]

    def must_not_measure(*_):
        raise AssertionError("measured again")

    monkeypatch.setattr(device, "decode_step_seconds", must_not_measure)
    again = choose_placement(shape)
    assert again.dtype == first.dtype and "kept from the first load" in again.reason
    assert choose_placement(shape, "bfloat16").dtype == "bfloat16"
