"""The Export page: a run's events arrive in order on the GUI thread and end
with the verification shown; Cancel leaves nothing; an existing file is one
dialog (or, for a previous qdesk export, a confirmation); an "Export…" request
selects the model and proposes the exact type for a quantized one."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QThread

from qdesk.core.export import ExportDone, ExportProgress, ExportStarted, Verification


@pytest.fixture
def tiny(make_window, tiny_llama, qtbot):
    w = make_window()
    entry = w.load(str(tiny_llama))
    assert entry.state == "ready", w.errors
    w.window.show_page("export")
    qtbot.waitUntil(w.window.runner.is_idle, timeout=60_000)  # other pages measure the model
    w.page = w.window.page("export")
    w.entry = entry
    return w


def _run(qtbot, page, timeout=180_000, **options):
    page._script_set(**options)
    assert page.run_action()
    assert page.job is not None  # returned at once: the export runs in a worker
    qtbot.waitUntil(lambda: page.job is None, timeout=timeout)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "qdesk-" in p.name)


def test_export_shows_progress_and_the_verification(tiny, qtbot, tmp_path):
    page = tiny.page
    threads = []
    original = page._on_event
    page._on_event = lambda e: (threads.append(QThread.currentThread()), original(e))[1]
    out = tmp_path / "tiny-F16.gguf"
    _run(qtbot, page, format="gguf", type="F16", output=str(out))
    assert tiny.errors == []
    kinds = [type(e) for e in page.events]
    assert kinds[0] is ExportStarted and kinds[-1] is ExportDone
    assert ExportProgress in kinds and Verification in kinds
    assert all(t is QThread.currentThread() for t in threads)
    assert out.is_file() and page.result.path == str(out)
    text = page.verification_label.text()
    assert "Verified in llama.cpp" in text and "mean KLD" in text
    assert str(out) in page.result_label.text()
    assert page.run_button.isEnabled() and not page.cancel_button.isEnabled()


def test_cancel_leaves_nothing(tiny, qtbot, tmp_path):
    page = tiny.page
    page._script_set(format="gguf", type="Q4_K_M", imatrix="mix", output=str(tmp_path / "c.gguf"))
    assert page.run_action()
    qtbot.waitUntil(lambda: any(isinstance(e, ExportProgress) for e in page.events), timeout=60_000)
    page.cancel_action()
    qtbot.waitUntil(lambda: page.job is None, timeout=60_000)
    assert "nothing was written" in page.progress_label.text()
    assert _leftovers(tmp_path) == [] and not (tmp_path / "c.gguf").exists()
    assert not (tmp_path / "c.imatrix.gguf").exists() and tiny.errors == []


def test_an_existing_file_is_one_dialog_and_a_previous_export_asks(tiny, qtbot, tmp_path):
    page = tiny.page
    mine = tmp_path / "mine.gguf"
    mine.write_text("the user's")
    page._script_set(format="gguf", type="F16", output=str(mine))
    assert not page.run_action()
    assert len(tiny.errors) == 1 and "exists" in tiny.errors[0][1]
    assert mine.read_text() == "the user's" and page.run_button.isEnabled()

    out = tmp_path / "again.gguf"
    _run(qtbot, page, format="gguf", type="F16", output=str(out), verify="no")
    asked = []
    page.ask_replace = lambda path: asked.append(path) or False
    page._script_set(output=str(out))
    assert not page.run_action() and asked == [out]  # declined: nothing happens
    page.ask_replace = lambda path: True
    before = out.read_bytes()
    assert page.run_action()  # accepted: the export starts (it was shown to work above)
    page.cancel_action()  # and a cancelled replacement leaves the previous file whole
    qtbot.waitUntil(lambda: page.job is None, timeout=120_000)
    assert out.read_bytes() == before and _leftovers(tmp_path) == []
    assert len(tiny.errors) == 1


def test_export_request_selects_the_model(make_window, tiny_llama, qtbot, tmp_path):
    import torch

    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import CalibrationSet
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import run_quantize

    ckpt = tmp_path / "tiny-rtn4"
    loaded = open_model(str(tiny_llama), backend="hf", dtype="float32")
    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0))
    run_quantize(loaded, make_config("rtn", bits=4, group_size=32), None,
                 CalibrationSet("random", ids, 0, "t"), output_dir=ckpt)
    loaded.close()
    w = make_window()
    entry = w.load(str(ckpt))
    assert entry.state == "ready", w.errors
    page = w.window.page("export")
    qtbot.waitUntil(w.window.runner.is_idle, timeout=60_000)
    w.window.context.request_export(entry.key)
    assert page.model_key == entry.key and page.type.currentData() == "exact"
    assert w.window.pages.currentWidget() is page
    assert page.output.text().endswith("-exact.gguf")
    page.output.setText(str(tmp_path / "x.gguf"))
    assert page.run_action()
    qtbot.waitUntil(lambda: page.job is None, timeout=180_000)
    assert w.errors == [] and page.result.tensor_types["Q4_0"] == 14
    assert "bit for bit" in page.verification_label.text()


def test_export_right_after_a_load_is_not_refused_as_busy(make_window, tiny_llama, qtbot,
                                                          tmp_path):
    # The Quantize page measures every model that loads (a read-only job); an
    # Export started in the same moment must not be told the model is busy.
    w = make_window()
    w.window.show_page("export")
    page = w.window.page("export")
    quantize = w.window.page("quantize")
    started = []

    def export_at_once(key):
        started.append((quantize._shapes_jobs.copy(), key))
        page._script_set(format="gguf", type="F16", output=str(tmp_path / "now.gguf"))
        started.append(page.run_action())

    w.window.models.loaded.connect(export_at_once)
    entry = w.load(str(tiny_llama))
    assert entry.state == "ready", w.errors
    measuring, key = started[0]
    assert key in measuring  # the race is real: the measurement was running
    assert started[1] is True and w.errors == []
    page.cancel_action()  # started is what this test is about; the export is tested above
    qtbot.waitUntil(lambda: page.job is None, timeout=120_000)
    assert w.errors == [] and _leftovers(tmp_path) == []
