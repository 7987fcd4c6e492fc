"""The job runner shows the reliability errors as one dialog each: a model
folder whose index points at a pickle file (opened in a real job), and a full
disk reported by a library that raises its own error type."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from qdesk.gui.jobs import JobRunner


@pytest.fixture
def runner(qtbot):
    r = JobRunner(None)
    r.errors = []
    r.error_shown.connect(lambda title, message: r.errors.append((title, message)))
    yield r
    r.cancel_all()
    qtbot.waitUntil(r.is_idle, timeout=30_000)


def _one_dialog(qtbot, runner, job) -> str:
    qtbot.waitUntil(lambda: job.outcome != "", timeout=120_000)
    assert job.outcome == "failed"
    boxes = [w for w in QApplication.topLevelWidgets()
             if isinstance(w, QMessageBox) and w.objectName() == "qdesk-error" and w.isVisible()]
    assert len(boxes) == 1 and len(runner.errors) == 1
    text = boxes[0].text()
    boxes[0].close()
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_pickle_index_is_one_dialog(runner, qtbot, tmp_path):
    from families import tiny_folder

    folder = tiny_folder("llama", tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.embed_tokens.weight": "pytorch_model.bin"}}))
    (folder / "pytorch_model.bin").write_bytes(b"not opened")

    def steps():
        from qdesk.core.models import open_model

        yield "opening"
        open_model(str(folder), backend="hf")

    runner.show_dialogs = True
    text = _one_dialog(qtbot, runner, runner.start("open", steps))
    assert "not a .safetensors file" in text
    shutil.rmtree(folder)


def test_a_library_disk_full_error_is_one_plain_dialog(runner, qtbot, tmp_path):
    """safetensors' writer on a really full disk (a 64 KiB tmpfs) raises its own
    error type, which carries only the OS text."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        def steps():
            import torch
            from safetensors.torch import save_file

            yield 1
            save_file({"w": torch.zeros(1 << 20)}, str(disk / "w.safetensors"))

        runner.show_dialogs = True
        text = _one_dialog(qtbot, runner, runner.start("save", steps))
        assert text.startswith("disk full") and text.endswith("(save)")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
