"""A form with one model's facts: what it is, where it runs, how it was quantized,
and the quantization job's own check of the result when there is one."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QGridLayout, QLabel, QWidget

from qdesk.gui.formatting import check_text, mib, quantization_text

ROWS = ("model", "source", "backend", "architecture", "parameters", "layers", "hidden",
        "vocab", "context", "dtype", "device", "memory", "quantization", "bpw", "calibration",
        "check")


class ModelFactsView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # A grid, not a QFormLayout: the form gave wrapped values the heights of
        # another width (a long path lost its last line, a short name got an
        # empty one).
        self._layout = QGridLayout(self)
        self._layout.setColumnStretch(1, 1)
        self._labels: dict[str, QLabel] = {}
        self._values: dict[str, QLabel] = {}
        for row, key in enumerate(ROWS):
            label, value = QLabel(), QLabel("—")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            self._layout.addWidget(label, row, 0, Qt.AlignmentFlag.AlignTop)
            self._layout.addWidget(value, row, 1, Qt.AlignmentFlag.AlignTop)
            self._labels[key], self._values[key] = label, value
        self._layout.setRowStretch(len(ROWS), 1)
        self._facts = None
        self._check = None
        self.retranslate()
        self.set_facts(None)

    def retranslate(self) -> None:
        titles = {
            "model": self.tr("Model"), "source": self.tr("Source"), "backend": self.tr("Backend"),
            "architecture": self.tr("Architecture"), "parameters": self.tr("Parameters"),
            "layers": self.tr("Layers"), "hidden": self.tr("Hidden size"),
            "vocab": self.tr("Vocabulary"), "context": self.tr("Context"),
            "dtype": self.tr("Dtype"), "device": self.tr("Device"), "memory": self.tr("Memory"),
            "quantization": self.tr("Quantization"), "bpw": self.tr("Bits per weight"),
            "calibration": self.tr("Calibration"), "check": self.tr("Self-check"),
        }
        for key, text in titles.items():
            self._labels[key].setText(text + ":")
        self.set_facts(self._facts, self._check)

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def set_facts(self, facts, check: dict | None = None) -> None:
        """``facts``: a core ``ModelFacts`` (or None); ``check``: a self-check as a
        dict (``SelfCheck`` fields), else the one recorded in the facts."""
        self._facts, self._check = facts, check
        if facts is None:
            for v in self._values.values():
                v.setText("—")
            self._show_rows(quantized=False)
            return
        q = dict(facts.quantization or {})
        values = {
            "model": facts.name,
            "source": f"{facts.source} — {facts.path}",
            "backend": {"hf": "transformers", "llamacpp": "llama.cpp"}.get(facts.backend, facts.backend),
            "architecture": facts.architecture,
            "parameters": self.tr("{n}M").format(n=f"{facts.parameters / 1e6:,.1f}"),
            "layers": str(facts.layers),
            "hidden": str(facts.hidden_size),
            "vocab": f"{facts.vocab_size:,}",
            "context": self.tr("{n} tokens").format(n=f"{facts.context_length:,}"),
            "dtype": facts.dtype,
            "device": facts.device,
            "memory": mib(facts.memory_bytes),
            "quantization": quantization_text(q),
            "bpw": "—" if q.get("bits_per_weight") is None else f"{q['bits_per_weight']:.3f}",
            "calibration": _calibration_text(q.get("calibration")),
            "check": "",
        }
        check = check if check is not None else q.get("check") or q.get("self_check")
        text, warning = check_text(check)
        values["check"] = text
        for key, value in values.items():
            self._values[key].setText(value or "—")
        self._values["dtype"].setToolTip(facts.dtype_reason)
        self._values["check"].setStyleSheet("color: #b00020; font-weight: bold;" if warning else "")
        self._show_rows(quantized=bool(q), checked=check is not None)

    def _show_rows(self, quantized: bool, checked: bool = False) -> None:
        for key in ("quantization", "bpw", "calibration", "check"):
            visible = quantized and (key != "check" or checked)
            if key == "calibration":
                visible = visible and self._values[key].text() not in ("", "—")
            self._labels[key].setVisible(visible)
            self._values[key].setVisible(visible)

    def value_text(self, key: str) -> str:
        return self._values[key].text()


def _calibration_text(calibration) -> str:
    if not isinstance(calibration, dict):
        return ""
    name = calibration.get("name", "")
    samples, tokens = calibration.get("samples"), calibration.get("tokens")
    return f"{name} {samples}×{tokens}" if samples and tokens else str(name)
