"""A hub download in progress: bytes, speed, time left, Cancel.

It gets plain progress (bytes done, total) and emits ``cancel_requested``; the
download itself is a job of the model registry.
"""

from __future__ import annotations

import time
from collections import deque

from PySide6.QtCore import QEvent, Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QProgressBar, QVBoxLayout

from qdesk.gui.formatting import duration, mib


class DownloadDialog(QDialog):
    cancel_requested = Signal()

    def __init__(self, name: str, parent=None) -> None:
        super().__init__(parent)
        self.name = name
        self.setModal(False)
        self.setMinimumWidth(420)
        self.title = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.detail = QLabel()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.rejected.connect(self._cancel)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.bar)
        layout.addWidget(self.detail)
        layout.addWidget(self.buttons)
        self._samples: deque[tuple[float, int]] = deque(maxlen=50)
        self._done = 0
        self._total = 0
        self.retranslate()

    def retranslate(self) -> None:
        self.setWindowTitle(self.tr("Downloading"))
        self.title.setText(self.tr("Downloading {name} from the Hugging Face hub").format(name=self.name))
        self._show()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def progress(self, done: int, total: int) -> None:
        """Bytes written so far and the total (0 when not known yet)."""
        self._done, self._total = done, total
        self._samples.append((time.monotonic(), done))
        self._show()

    def speed(self) -> float | None:
        """Bytes per second over the last samples (at most the last 10 s)."""
        if len(self._samples) < 2:
            return None
        now = self._samples[-1][0]
        first = next(s for s in self._samples if now - s[0] <= 10 or s is self._samples[-2])
        dt = now - first[0]
        return (self._samples[-1][1] - first[1]) / dt if dt > 0 else None

    def _show(self) -> None:
        done, total = self._done, self._total
        if total > 0:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * min(done, total) / total))
        speed = self.speed()
        parts = [self.tr("{done} of {total}").format(done=mib(done), total=mib(total) if total else "?")]
        if speed:
            parts.append(self.tr("{speed}/s").format(speed=mib(speed)))
            if total > done:
                parts.append(self.tr("{eta} left").format(eta=duration((total - done) / speed)))
        if not done and not total:
            parts = [self.tr("connecting…")]
        self.detail.setText(" · ".join(parts))

    def _cancel(self) -> None:
        self.detail.setText(self.tr("cancelling…"))
        self.buttons.setEnabled(False)
        self.cancel_requested.emit()

    def finish(self) -> None:
        """Close without cancelling (the download ended one way or another)."""
        self.done(QDialog.DialogCode.Accepted)

    def reject(self) -> None:  # Esc / window close: cancel the download, as the button does
        self._cancel()
