"""The end of a quantization: time, bits per weight, mean error, the held-out
self-check (a visible warning when it says the result is implausible), and the
next steps (chat with it, export it, open its folder)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from qdesk.gui.formatting import check_text, duration, mib


class QuantizeSummaryView(QFrame):
    chat_clicked = Signal()
    export_clicked = Signal()
    open_folder_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.headline = QLabel()
        f = self.headline.font()
        f.setBold(True)
        self.headline.setFont(f)
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.check = QLabel()
        self.check.setWordWrap(True)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setObjectName("quantize-warning")
        self.warning.setStyleSheet("QLabel { color: #ffffff; background: #b00020; "
                                   "padding: 6px; border-radius: 3px; font-weight: bold; }")
        self.warning.hide()
        self.chat = QPushButton()
        self.export = QPushButton()
        self.open_folder = QPushButton()
        buttons = QHBoxLayout()
        buttons.addWidget(self.chat)
        buttons.addWidget(self.export)
        buttons.addWidget(self.open_folder)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.detail)
        layout.addWidget(self.check)
        layout.addWidget(self.warning)
        layout.addLayout(buttons)
        self.chat.clicked.connect(self.chat_clicked)
        self.export.clicked.connect(self.export_clicked)
        self.open_folder.clicked.connect(self.open_folder_clicked)
        self._summary = None
        self._check = None
        self._state = "idle"
        self._message = ""
        self.retranslate()

    def retranslate(self) -> None:
        self.chat.setText(self.tr("Chat with it"))
        self.chat.setToolTip(self.tr("Open the chat page with the original and the new model"))
        self.export.setText(self.tr("Export…"))
        self.export.setToolTip(self.tr("Export the new model as GGUF or safetensors"))
        self.open_folder.setText(self.tr("Open folder"))
        self._show()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def clear(self, state: str = "idle", message: str = "") -> None:
        """``state``: idle | running | cancelled | failed."""
        self._summary, self._check, self._state, self._message = None, None, state, message
        self._show()

    def set_summary(self, summary, check=None) -> None:
        """A ``QuantizeSummary`` and the job's self-check (``summary.check`` when the
        job records it there; read defensively)."""
        self._summary = summary
        self._check = check if check is not None else getattr(summary, "check", None)
        self._state = "done"
        self._show()

    def has_warning(self) -> bool:
        return self.warning.isVisibleTo(self)

    def _show(self) -> None:
        s = self._summary
        done = s is not None
        for b in (self.chat, self.export, self.open_folder):
            b.setVisible(done)
        if not done:
            texts = {
                "idle": self.tr("Choose the options and press Run (Ctrl+R)."),
                "running": self.tr("Quantizing…"),
                "cancelled": self.tr("Cancelled: the model is as it was and nothing was written."),
                "failed": self.tr("Failed: {reason}").format(reason=self._message),
            }
            self.headline.setText(texts.get(self._state, ""))
            self.detail.setText("")
            self.check.setText("")
            self.warning.hide()
            return
        self.headline.setText(self.tr("Done in {time}: {bpw} bits per weight, mean error {err}").format(
            time=duration(s.seconds), bpw=f"{s.bits_per_weight:.3f}", err=f"{s.mean_rel_error:.4f}"))
        self.detail.setText(self.tr("{q} layers quantized, {k} kept · plan {plan} · calibration "
                                    "{calib} · peak memory {mem} · {out}").format(
            q=s.layers_quantized, k=s.layers_kept, plan=s.plan, calib=s.calibration,
            mem=mib(s.peak_memory_bytes), out=s.output_dir or ""))
        text, warns = check_text(self._check)
        if self._check is None:
            self.check.setText(self.tr("Held-out check: not reported by this job."))
        else:
            self.check.setText(self.tr("Held-out check: {text}").format(text=text))
        if warns:
            self.warning.setText(self.tr("Warning: the held-out check says this result is "
                                         "implausible — {text}").format(text=text))
        self.warning.setVisible(warns)
