"""The main window: models load in workers and show their facts; bad models give
one dialog each and leave the others usable; pages slot in; closing while a job
runs asks, cancels and leaves nothing half-written."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QLabel, QMessageBox

from qdesk.gui.model_registry import FAILED, READY
from qdesk.gui.quantize_request import QuantizeOptions


@pytest.mark.slow
def test_loads_the_demo_model_without_blocking(make_window, qtbot):
    w = make_window()
    key = w.window.sidebar.request_load("demo")
    entry = w.window.models.entry(key)
    assert entry.state == "loading"  # returned at once: the load runs in a worker
    assert w.window.jobs_status.isVisible()
    qtbot.waitUntil(lambda: w.window.models.entry(key).state != "loading", timeout=180_000)
    entry = w.window.models.entry(key)
    assert entry.state == READY, w.errors
    facts = w.window.sidebar.facts
    assert facts.value_text("layers") == "30"
    assert facts.value_text("architecture") == "LlamaForCausalLM"
    item = w.window.sidebar._item_for(key)
    assert item.text(0).startswith("● ") and "SmolLM2" in item.text(0)
    qtbot.waitUntil(lambda: not w.window.jobs_status.isVisible(), timeout=60_000)


@pytest.mark.parametrize("make_input, words", [
    (lambda tmp: str(tmp / "no-such-model"), "no such file or folder"),
    (lambda tmp: _write(tmp / "notes.txt", b"not a model"), "not a model"),
    (lambda tmp: _write(tmp / "broken.gguf", b"GGUF\x03\x00\x00\x00garbage"), "broken.gguf"),
    (lambda tmp: _folder(tmp / "bad-config", b"{not json"), "config.json"),
])
def test_bad_model_is_one_dialog_and_the_others_stay_usable(make_window, qtbot, tmp_path,
                                                            tiny_llama, make_input, words):
    w = make_window()
    good = w.load(str(tiny_llama))
    assert good.state == READY
    w.window.runner.show_dialogs = True
    text = make_input(tmp_path)
    key = w.window.sidebar.request_load(text)
    if key is not None:
        qtbot.waitUntil(lambda: w.window.models.entry(key).state != "loading", timeout=60_000)
        assert w.window.models.entry(key).state == FAILED
    assert len(w.errors) == 1 and words in w.errors[0][1], w.errors
    assert "Traceback" not in w.errors[0][1]
    boxes = w.window.findChildren(QMessageBox, "qdesk-error")
    assert [b.text() for b in boxes if b.isVisible()] == [w.errors[0][1]]
    for b in boxes:
        b.close()
    # the good model is untouched and still works
    assert w.window.models.entry(good.key).state == READY
    page = w.window.page("quantize")
    w.window.models.select(good.key)
    qtbot.waitUntil(lambda: page.shapes() is not None, timeout=60_000)
    out = tmp_path / "still-works"
    page.form.set_options(QuantizeOptions.from_mapping(
        dict(method="rtn", calib_samples=2, calib_tokens=32, output=str(out)), page.form.options()))
    assert page.run_action()
    qtbot.waitUntil(lambda: page.job is None, timeout=120_000)
    assert out.is_dir()


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _folder(path, config: bytes) -> str:
    path.mkdir()
    (path / "config.json").write_bytes(config)
    return str(path)


class _Page(QLabel):
    page_key = "export"

    def page_title(self) -> str:
        return "Export"


def test_pages_slot_in_and_requests_reach_them(make_window):
    w = make_window(page_factories=[lambda ctx: _Page("an export page")])
    assert w.window.has_page("export") and not w.window.has_page("chat")
    asked = []
    w.window.context.export_requested.connect(asked.append)
    w.window.context.request_export("some model")
    assert asked == ["some model"]
    assert w.window.current_page().page_key == "export"
    assert w.window.pages.tabText(0) == "Export"


def test_default_pages_are_registered(make_window):
    w = make_window()
    keys = list(w.window._pages)
    assert keys[:2] == ["quantize", "chat"]
    w.window.context.show_page("chat")
    assert w.window.current_page().page_key == "chat"


def test_drop_a_folder_onto_the_window_loads_it(make_window, qtbot, tiny_llama):
    w = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tiny_llama))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    w.window.dropEvent(event)
    entry = w.window.models.find(str(tiny_llama))
    assert entry is not None
    qtbot.waitUntil(lambda: w.window.models.find(str(tiny_llama)).state == READY, timeout=60_000)


def test_unload_frees_and_is_refused_while_busy(make_window, qtbot, tiny_llama):
    w = make_window()
    entry = w.load(str(tiny_llama))
    runner = w.window.runner
    qtbot.waitUntil(runner.is_idle, timeout=60_000)  # the quantize page measures it first
    import threading

    gate = threading.Event()
    job = runner.start("busy", lambda: iter(gate.wait(10) for _ in range(1)), models=(entry.key,))
    assert job is not None
    assert not w.window.models.unload(entry.key)
    assert "in use by “busy”" in w.errors[-1][1]
    gate.set()
    qtbot.waitUntil(lambda: job.outcome != "", timeout=30_000)
    assert w.window.models.unload(entry.key)
    assert w.window.models.entry(entry.key) is None
    assert w.window.sidebar._item_for(entry.key) is None


def test_closing_while_a_job_runs_asks_then_cancels_cleanly(make_window, qtbot, tiny_llama,
                                                           tmp_path, monkeypatch):
    w = make_window()
    entry = w.load(str(tiny_llama))
    page = w.window.page("quantize")
    qtbot.waitUntil(lambda: page.shapes() is not None, timeout=60_000)
    out = tmp_path / "half"
    page.form.set_options(QuantizeOptions.from_mapping(
        dict(method="gptq", calib_samples=64, calib_tokens=256, output=str(out)),
        page.form.options()))
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: asked.append(a[2]) or QMessageBox.StandardButton.No)
    w.window.runner.show_dialogs = True
    assert page.run_action()
    w.window.close()
    assert len(asked) == 1 and "Quantizing" in asked[0]
    assert w.window.isVisible() and page.job is not None  # "No": nothing happens
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    w.window.close()
    qtbot.waitUntil(lambda: not w.window.isVisible(), timeout=120_000)
    assert w.window.runner.is_idle()
    assert not out.exists()
    assert not any(p.name.startswith(".half") for p in tmp_path.iterdir())
    assert entry.key  # the window closed only after the job stopped
