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


def test_chat_streams_a_reply_with_margins(window, qtbot):
    with qtbot.waitSignal(window.model_loaded, timeout=120_000):
        window.load_model("demo")
    chat = window.chat
    assert chat.send_button.isEnabled()
    with qtbot.waitSignal(chat.reply_finished, timeout=120_000) as blocker:
        chat.send_button.click()
        assert chat.stop_button.isEnabled()  # the reply streams in a worker
    reply = blocker.args[0]
    assert reply.text.startswith("The capital of France is Paris")
    assert "".join(t.text for t in chat.tokens) == reply.text
    assert "Paris" in chat.transcript.toPlainText()
    assert "near ties" in chat.summary.text()
    qtbot.waitUntil(lambda: chat.send_button.isEnabled(), timeout=5000)


def test_stop_ends_the_reply(window, qtbot):
    with qtbot.waitSignal(window.model_loaded, timeout=120_000):
        window.load_model("demo")
    chat = window.chat
    chat.prompt.setPlainText("Count from one to two hundred, one number per line.")
    with qtbot.waitSignal(chat.reply_finished, timeout=120_000) as blocker:
        chat.send_button.click()
        qtbot.waitUntil(lambda: len(chat.tokens) >= 3, timeout=60_000)
        chat.stop_button.click()
    assert blocker.args[0].finish_reason == "cancelled"
    assert blocker.args[0].n_tokens < 20
