"""The shared sampling controls of the chat page: temperature, top-p, top-k,
repetition penalty, seed, max new tokens, and the system prompt.

``config(stats_top_k)`` gives core's ``SamplingConfig`` (its checks are the
only ones); ``set_config`` shows one (a loaded conversation).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from qdesk.core.chat.events import SamplingConfig


class SamplingControls(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setDecimals(2)
        self.top_p.setValue(1.0)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.repetition = QDoubleSpinBox()
        self.repetition.setRange(0.5, 3.0)
        self.repetition.setSingleStep(0.05)
        self.repetition.setDecimals(2)
        self.repetition.setValue(1.0)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.max_new = QSpinBox()
        self.max_new.setRange(1, 32768)
        self.max_new.setValue(256)
        self.system = QLineEdit()
        self.labels = [QLabel() for _ in range(7)]
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        for label, w in zip(self.labels, (self.temperature, self.top_p, self.top_k,
                                          self.repetition, self.seed, self.max_new, self.system)):
            label.setBuddy(w)
            layout.addWidget(label)
            layout.addWidget(w, 3 if w is self.system else 0)
        self.retranslate()

    def retranslate(self) -> None:
        texts = (
            (self.tr("T"), self.tr("Temperature; 0 picks the most likely token (greedy).")),
            (self.tr("top-p"), self.tr("Sample only from the most likely tokens whose "
                                       "probabilities add up to this (1 = off).")),
            (self.tr("top-k"), self.tr("Sample only from this many most likely tokens (0 = off).")),
            (self.tr("rep."), self.tr("Repetition penalty: above 1 makes tokens already seen less "
                                      "likely (1 = off).")),
            (self.tr("seed"), self.tr("The same seed and settings give the same replies.")),
            (self.tr("max"), self.tr("At most this many new tokens per reply.")),
            (self.tr("system"), self.tr("The system prompt every pane gets (empty: none).")),
        )
        widgets = (self.temperature, self.top_p, self.top_k, self.repetition, self.seed,
                   self.max_new, self.system)
        for label, w, (text, tip) in zip(self.labels, widgets, texts):
            label.setText(text)
            label.setToolTip(tip)
            w.setToolTip(tip)
        self.system.setPlaceholderText(self.tr("system prompt (optional)"))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def config(self, stats_top_k: int = 20) -> SamplingConfig:
        return SamplingConfig(
            temperature=self.temperature.value(), top_p=self.top_p.value(),
            top_k=self.top_k.value(), repetition_penalty=self.repetition.value(),
            seed=self.seed.value(), max_new_tokens=self.max_new.value(),
            stats_top_k=stats_top_k,
        )

    def system_prompt(self) -> str | None:
        return self.system.text().strip() or None

    def set_config(self, s: SamplingConfig, system: str | None) -> None:
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.top_k.setValue(s.top_k)
        self.repetition.setValue(s.repetition_penalty)
        self.seed.setValue(s.seed)
        self.max_new.setValue(s.max_new_tokens)
        self.system.setText(system or "")
