"""The models sidebar: the hub download dialog (offline here: one clear message),
the memory estimate before loading, recent models."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox

from qdesk.gui.widgets.download_dialog import DownloadDialog


def test_download_offline_is_one_clear_message(make_window, qtbot):
    w = make_window()
    w.window.runner.show_dialogs = True
    bar = w.window.sidebar
    bar.hub_id.setText("org/model@v1")
    assert bar.download.isEnabled()
    bar.download.click()
    key = "org/model@v1"
    qtbot.waitUntil(lambda: bool(w.errors), timeout=60_000)
    assert len(w.errors) == 1
    assert "cannot download it (no network" in w.errors[0][1]
    qtbot.waitUntil(lambda: bar.download_dialog(key) is None, timeout=10_000)
    assert not [d for d in w.window.findChildren(DownloadDialog) if d.isVisible()]
    assert w.window.models.entry(key).state == "failed"
    boxes = [b for b in w.window.findChildren(QMessageBox, "qdesk-error") if b.isVisible()]
    assert len(boxes) == 1
    boxes[0].close()


def test_not_a_hub_id_is_refused_before_anything_starts(make_window):
    w = make_window()
    bar = w.window.sidebar
    bar.hub_id.setText("not a hub id")
    assert not bar.download.isEnabled()
    bar._download_clicked()
    assert len(w.errors) == 1 and "not a hub id" in w.errors[0][1]
    assert w.window.runner.is_idle()


def test_download_dialog_shows_bytes_speed_and_time_left(qtbot, monkeypatch):
    import qdesk.gui.widgets.download_dialog as dd

    clock = [100.0]
    monkeypatch.setattr(dd.time, "monotonic", lambda: clock[0])
    d = DownloadDialog("org/model")
    qtbot.addWidget(d)
    d.progress(0, 100 * 2**20)
    clock[0] += 2.0
    d.progress(20 * 2**20, 100 * 2**20)
    text = d.detail.text()
    assert "20 MiB of 100 MiB" in text
    assert "10 MiB/s" in text
    assert "0:08 left" in text
    cancelled = []
    d.cancel_requested.connect(lambda: cancelled.append(True))
    d.reject()  # Esc or the window's close button: cancel the download
    assert cancelled == [True]


def test_estimate_is_shown_and_a_model_that_does_not_fit_is_refused(make_window, tiny_llama,
                                                                   monkeypatch):
    import qdesk.core.models.device as device

    w = make_window()
    bar = w.window.sidebar
    item = bar.available_group.child(0)  # the demo
    bar.tree.setCurrentItem(item)
    assert "free" in bar.estimate.text()
    monkeypatch.setattr(device, "available_memory_bytes", lambda kind: 10 * 2**20)
    assert bar.request_load(str(tiny_llama)) is None
    assert len(w.errors) == 1 and "needs about" in w.errors[0][1] and "free" in w.errors[0][1]
    assert w.window.models.entries() == [] and w.window.runner.is_idle()


def test_recent_models_are_listed_after_a_restart(make_window, qtbot, tiny_llama):
    w = make_window()
    w.load(str(tiny_llama))
    w.close()
    again = make_window()
    texts = [again.window.sidebar.available_group.child(i).toolTip(0)
             for i in range(again.window.sidebar.available_group.childCount())]
    assert str(tiny_llama) in texts


def test_long_facts_wrap_without_losing_a_line(make_window, qapp, qtbot):
    # A QFormLayout gave wrapped values the heights of another width: a long path
    # lost its last line in a 1024x640 window. Every value gets the height its
    # text needs at its width, with the app's font (the CJK fallback included).
    from PySide6.QtGui import QFont

    from qdesk.core.models import ModelFacts
    from qdesk.gui.i18n import Translations

    font = QFont(qapp.font())
    Translations(qapp)._apply_font()
    try:
        w = make_window()
        w.window._script_resize("1024", "640")
        qtbot.wait(100)  # the window settles (the sidebar shows its selection's facts)
        view = w.window.sidebar.facts
        view.set_facts(ModelFacts(
            "demo (SmolLM2-135M-Instruct)", "demo",
            "/root/.local/share/qdesk/models/SmolLM2-135M-Instruct-bf16-0.1.2",
            "hf", "LlamaForCausalLM", 134_515_008, 30, 576, 49_152, 8192, "float32", "cpu",
            2**29))
        qtbot.wait(50)
        for key in ("model", "source", "architecture", "memory"):
            label = view._values[key]
            assert label.height() >= label.heightForWidth(label.width()), key
        source = view._values["source"]
        assert source.height() >= 3 * source.fontMetrics().height()  # it wraps, all shown
    finally:
        qapp.setFont(font)
