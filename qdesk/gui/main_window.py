"""The main window: loads a model in a worker and shows what it is.

Loading never runs on the GUI thread: a superqt worker does it, its progress
reaches the window through a queued signal, and errors become one dialog.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from qdesk.core.errors import QdeskError
from qdesk.core.models import LoadedModel, open_model
from qdesk.gui.chat_pane import ChatPane
from qdesk.gui.model_facts_view import ModelFactsView


class _ProgressRelay(QObject):
    """Carries progress callbacks from the worker thread to the GUI thread."""

    progressed = Signal(str, int, int)


class MainWindow(QMainWindow):
    model_loaded = Signal(object)  # LoadedModel
    load_failed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("qdesk")
        self.resize(1100, 700)
        self.loaded: LoadedModel | None = None
        self._worker = None

        central = QWidget(self)
        layout = QVBoxLayout(central)
        self.status = QLabel("No model loaded.")
        self.status.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.facts_view = ModelFactsView()
        self.chat = ChatPane()
        body = QHBoxLayout()
        body.addWidget(self.facts_view, 0)
        body.addWidget(self.chat, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addLayout(body, 1)
        self.setCentralWidget(central)
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

    def load_model(self, model: str) -> None:
        self.status.setText(f"Loading {model} …")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        relay = self._relay

        def job() -> LoadedModel:
            return open_model(model, progress=lambda s, d, t: relay.progressed.emit(s, d, t))

        # Connecting "errored" here (not later) keeps superqt from re-raising the
        # error in the event loop: it becomes one dialog instead.
        self._worker = create_worker(
            job,
            _connect={
                "returned": self._on_loaded,
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self.status.setText(f"Preparing the model: {stage} …")
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _on_loaded(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.facts_view.set_facts(loaded.facts)
        self.status.setText(f"Loaded {loaded.facts.name}.")
        self.setWindowTitle(f"qdesk — {loaded.facts.name}")
        self.chat.set_model(loaded.backend)
        self.model_loaded.emit(loaded)

    def _on_error(self, error: Exception) -> None:
        message = str(error) if isinstance(error, QdeskError) else f"{type(error).__name__}: {error}"
        self.status.setText("The model could not be loaded.")
        self.load_failed.emit(message)
        QMessageBox.critical(self, "qdesk", message)

    def _on_finished(self) -> None:
        self.progress.setVisible(False)
        self._worker = None

    def closeEvent(self, event) -> None:
        if self._worker is not None:
            self._worker.quit()  # a load cannot stop midway; its result is dropped
        super().closeEvent(event)
