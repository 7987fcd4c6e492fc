"""The status bar's running jobs: the newest one's line, a bar and Cancel; the
others in the tooltip."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget


class JobsStatus(QWidget):
    def __init__(self, runner, parent=None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(160)
        self.bar.setMaximumHeight(14)
        self.bar.setTextVisible(False)
        self.cancel = QPushButton()
        self.cancel.setFlat(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel)
        self.cancel.clicked.connect(self._cancel)
        runner.job_started.connect(self._watch)
        runner.job_finished.connect(lambda _job: self.refresh())
        self.retranslate()

    def retranslate(self) -> None:
        self.cancel.setText(self.tr("Cancel"))
        self.cancel.setToolTip(self.tr("Cancel this job (it stops at its next step)"))
        self.refresh()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def _watch(self, job) -> None:
        job.status_changed.connect(self.refresh)
        self.refresh()

    def current(self):
        return self.runner.jobs[-1] if self.runner.jobs else None

    def refresh(self) -> None:
        job = self.current()
        self.setVisible(job is not None)
        if job is None:
            return
        line = job.title + (f": {job.status}" if job.status else "")
        others = len(self.runner.jobs) - 1
        more = ("  " + self.tr("(+{n} more)").format(n=others)) if others else ""
        metrics = self.label.fontMetrics()
        width = max(200, int(self.window().width() * 0.45)) if self.window() else 500
        self.label.setText(metrics.elidedText(line, Qt.TextElideMode.ElideMiddle, width) + more)
        self.setToolTip("\n".join(j.title + (f": {j.status}" if j.status else "")
                                  for j in self.runner.jobs))
        if job.total_count > 0:
            self.bar.setRange(0, job.total_count)
            self.bar.setValue(min(job.done_count, job.total_count))
        else:
            self.bar.setRange(0, 0)
        self.cancel.setEnabled(not job.cancel_requested)

    def _cancel(self) -> None:
        job = self.current()
        if job is not None:
            job.cancel()
