"""GUI tests: garbage is collected on the GUI thread, no worker outlives a test,
and the settings live in a temporary folder.

Python's cyclic collector runs in whichever thread allocates when a threshold
is crossed; if that is a worker thread and the garbage holds Qt objects from an
earlier test, Qt crashes. The app avoids this with pyqtgraph's
GarbageCollector (qdesk/app.py); the tests do the same by hand.
"""

import gc
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/families.py


@pytest.fixture(autouse=True)
def gui_thread_garbage_collection(qapp):
    gc.collect()
    gc.disable()
    yield
    pool = QThreadPool.globalInstance()
    assert pool.waitForDone(120_000), "a worker was still running after the test"
    qapp.processEvents()
    gc.collect()
    gc.enable()


@pytest.fixture(autouse=True)
def temporary_settings(tmp_path, monkeypatch):
    """Each test starts from empty settings in its own folder (never the user's)."""
    folder = tmp_path / "settings"
    folder.mkdir()
    monkeypatch.setenv("QDESK_SETTINGS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A 2-layer random Llama (hidden 64) with the demo's tokenizer, as an HF folder:
    loads and quantizes in about a second."""
    from families import tiny_folder

    return tiny_folder("llama", tmp_path_factory.mktemp("tiny") / "tiny-llama")


class Window:
    """A main window for a test, with the errors the runner reported."""

    def __init__(self, qtbot, page_factories=None):
        from qdesk.gui.main_window import MainWindow

        self.window = MainWindow(page_factories=page_factories)
        # Errors are read from error_shown; a test that wants the dialog itself turns
        # them back on. (Not qtbot.addWidget: the fixture closes it after the jobs.)
        self.window.runner.show_dialogs = False
        self.errors: list[tuple[str, str]] = []
        self.window.runner.error_shown.connect(lambda t, m: self.errors.append((t, m)))
        self.window.show()
        self.qtbot = qtbot

    def load(self, text: str, backend: str = "auto", timeout: int = 180_000):
        """Load through the sidebar and wait until it is ready (or failed)."""
        key = self.window.sidebar.request_load(text, backend)
        assert key is not None, self.errors
        self.qtbot.waitUntil(lambda: self.window.models.entry(key).state != "loading",
                             timeout=timeout)
        return self.window.models.entry(key)

    def close(self):
        w = self.window
        w.runner.show_dialogs = False
        w.runner.cancel_all()
        self.qtbot.waitUntil(w.runner.is_idle, timeout=120_000)
        w.close()
        w.deleteLater()


@pytest.fixture
def make_window(qtbot):
    made = []

    def make(page_factories=None) -> Window:
        w = Window(qtbot, page_factories)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
