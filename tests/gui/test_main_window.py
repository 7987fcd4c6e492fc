"""The main window loads a real model in a worker and shows its facts."""

import pytest
from PySide6.QtWidgets import QMessageBox

from qdesk.gui.main_window import MainWindow


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    return w


def test_loads_the_demo_model_without_blocking(window, qtbot):
    with qtbot.waitSignal(window.model_loaded, timeout=120_000):
        window.load_model("demo")
        assert window.progress.isVisible()  # returned at once: the load runs in a worker
    assert window.facts_view.value_text("Layers") == "30"
    assert window.facts_view.value_text("Architecture") == "LlamaForCausalLM"
    assert "SmolLM2" in window.windowTitle()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=5000)


def test_bad_model_shows_one_error(window, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a: shown.append(a[2]))
    with qtbot.waitSignal(window.load_failed, timeout=30_000) as blocker:
        window.load_model("/no/such/model")
    assert blocker.args == ["/no/such/model: no such file or folder"]
    assert shown == ["/no/such/model: no such file or folder"]
    assert window.loaded is None
