"""A form that shows one loaded model's facts (a ``ModelFacts``)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QLabel, QWidget

from qdesk.core.models import ModelFacts

_ROWS = (
    ("Model", lambda f: f.name),
    ("Source", lambda f: f"{f.source} — {f.path}"),
    ("Backend", lambda f: f.backend),
    ("Architecture", lambda f: f.architecture),
    ("Parameters", lambda f: f"{f.parameters:,}"),
    ("Layers", lambda f: str(f.layers)),
    ("Hidden size", lambda f: str(f.hidden_size)),
    ("Vocabulary", lambda f: f"{f.vocab_size:,}"),
    ("Context", lambda f: f"{f.context_length:,} tokens"),
    ("Dtype", lambda f: f"{f.dtype}  ({f.dtype_reason})"),
    ("Device", lambda f: f.device),
    ("Memory", lambda f: f"{f.memory_bytes / 2**20:,.0f} MiB"),
)


class ModelFactsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QFormLayout(self)
        self._values: dict[str, QLabel] = {}
        for label, _ in _ROWS:
            value = QLabel("—")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            layout.addRow(f"{label}:", value)
            self._values[label] = value

    def set_facts(self, facts: ModelFacts) -> None:
        for label, get in _ROWS:
            self._values[label].setText(get(facts))

    def value_text(self, label: str) -> str:
        return self._values[label].text()
