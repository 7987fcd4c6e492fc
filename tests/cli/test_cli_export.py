"""``qdesk export``: progress and results on stderr, JSON events, exit codes
(0 ok, 2 bad input, 3 disk full, 130 cancelled), one-line errors, and nothing
left behind by a failed or cancelled export."""

from __future__ import annotations

import errno
import json

import gguf
import pytest
from families import tiny_folder

from qdesk.cli import main

FAST = ["--verify-ctx", "64", "--verify-chunks", "2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Llama folder and an asymmetric 4-bit qdesk checkpoint of it."""
    import torch

    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import CalibrationSet
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    root = tmp_path_factory.mktemp("cli-export")
    dense = tiny_folder("llama", root / "tiny")
    loaded = open_model(str(dense), backend="hf", dtype="float32")
    ids = torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(0))
    run_quantize(loaded, make_config("rtn", bits=4, group_size=32, symmetric=False), None,
                 CalibrationSet("random", ids, 0, "t"), output_dir=root / "asym4")
    loaded.close()
    return dense, root / "asym4"


def _error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err and err[-1].startswith("qdesk: error:"), err
    assert not any("Traceback" in ln for ln in err)
    return err[-1]


def _left(folder):
    return sorted(p.name for p in folder.iterdir() if "qdesk-" in p.name)


def test_gguf_export_prints_progress_and_the_verification(folders, tmp_path, capsys):
    dense, _ = folders
    out = tmp_path / "m.gguf"
    assert main(["export", str(dense), "--format", "gguf", "--type", "F16", "-o", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "llama.cpp converter" in err and "verifying" in err
    assert f"done: {out} (gguf F16" in err and "bits per weight" in err
    assert "verified in llama.cpp against the in-memory model" in err and "mean KLD" in err
    assert gguf.GGUFReader(str(out)).get_field("qdesk.export.format").contents() == "gguf"


def test_exact_export_json_events(folders, tmp_path, capsys):
    _, ckpt = folders
    out = tmp_path / "x.gguf"
    assert main(["export", str(ckpt), "--format", "gguf", "--type", "exact", "-o", str(out),
                 "--json", *FAST]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "ExportStarted" and kinds[-1] == "ExportDone"
    assert {"dequantize", "convert", "map", "write", "check", "verify"} <= {
        e["stage"] for e in events if e["event"] == "ExportProgress"}
    done = events[-1]
    assert done["tensor_types"]["Q5_0"] == 14 and done["verification"]["weights_exact"] is True
    assert done["verification"]["consumer"] == "llama.cpp"


def test_refusals_are_one_line_and_exit_2(folders, tmp_path, capsys):
    dense, ckpt = folders
    out = tmp_path / "e.gguf"
    out.write_text("mine")
    assert main(["export", str(dense), "--format", "gguf", "--type", "F16", "-o", str(out)]) == 2
    assert "exists (pass --force" in _error(capsys)
    assert main(["export", str(dense), "--format", "gguf", "--type", "F16", "-o", str(out),
                 "--force"]) == 2
    assert "not a qdesk export" in _error(capsys)
    assert out.read_text() == "mine"
    assert main(["export", str(dense), "--format", "gguf", "-o", str(tmp_path / "t.gguf")]) == 2
    assert "needs --type" in _error(capsys)
    assert main(["export", str(ckpt), "--format", "gptq", "-o", str(tmp_path / "g")]) == 2
    line = _error(capsys)
    assert "asymmetric" in line and "compressed-tensors" in line
    assert main(["export", str(ckpt), "--format", "gguf", "--type", "Q4_K_M",
                 "-o", str(tmp_path / "q.gguf")]) == 2
    assert "--allow-requantize" in _error(capsys)
    assert _left(tmp_path) == []


def test_disk_full_exits_3_and_leaves_nothing(folders, tmp_path, capsys, monkeypatch):
    def full(self, tensor, tensor_endianess=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full)
    dense, _ = folders
    assert main(["export", str(dense), "--format", "gguf", "--type", "BF16",
                 "-o", str(tmp_path / "d.gguf")]) == 3
    assert "disk full" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_exits_130_and_leaves_nothing(folders, tmp_path, capsys, monkeypatch):
    def interrupted(self, tensor, tensor_endianess=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", interrupted)
    dense, _ = folders
    assert main(["export", str(dense), "--format", "gguf", "--type", "BF16",
                 "-o", str(tmp_path / "i.gguf")]) == 130
    assert "cancelled" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
