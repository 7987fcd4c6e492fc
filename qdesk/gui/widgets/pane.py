"""One chat pane: a header (model, backend, quantization, live tokens/s and
time to first token), the conversation as a ``TokenView``, and a footer with
the reply's figures and its versions (branches).

The pane draws; its buttons emit requests (widen, solo, make reference,
another version) that the chat page carries out.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qdesk.gui.widgets.reply_graphs import PANE_COLORS
from qdesk.gui.widgets.token_view import TokenView


def quantization_text(facts) -> str:
    """'gptq 4-bit g64 · 4.25 bpw' from a ModelFacts' quantization dict, '' for dense."""
    q = getattr(facts, "quantization", None) or {}
    if not q:
        return ""
    parts = []
    method = q.get("method") or q.get("quant_method") or q.get("format")
    if method:
        parts.append(str(method))
    if q.get("bits"):
        parts.append(f"{q['bits']}-bit")
    if q.get("group_size"):
        parts.append(f"g{q['group_size']}")
    bpw = q.get("bits_per_weight") or q.get("bpw")
    texts = [" ".join(parts)] if parts else []
    if isinstance(bpw, (int, float)):
        texts.append(f"{bpw:.2f} bpw")
    if q.get("int8_activations"):
        texts.append(QCoreApplication.translate("PaneView", "int8 act"))
    return " · ".join(texts)


class PaneView(QFrame):
    widen_requested = Signal(int)
    solo_requested = Signal(int)
    reference_requested = Signal(int)
    version_requested = Signal(int, int)  # pane, branch

    def __init__(self, index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.index = index
        self.setFrameShape(QFrame.Shape.StyledPanel)
        color = PANE_COLORS[index % len(PANE_COLORS)]
        self.setStyleSheet(f"PaneView {{ border-top: 3px solid {color}; }}")
        self.name = QLabel()
        self.name.setTextFormat(Qt.TextFormat.RichText)
        self.name.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.details = QLabel()
        self.details.setStyleSheet("color:#555;")
        self.details.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.speed = QLabel()
        self.speed.setStyleSheet("color:#555;")
        self.speed.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.reference_button = self._tool("★")
        self.widen_button = self._tool("⇔")
        self.solo_button = self._tool("□")
        head = QHBoxLayout()
        head.setSpacing(4)
        head.addWidget(self.name, 1)
        head.addWidget(self.speed)
        head.addWidget(self.reference_button)
        head.addWidget(self.widen_button)
        head.addWidget(self.solo_button)

        self.view = TokenView()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color:#333;")
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.MinimumExpanding)
        self.prev_button = self._tool("◀")
        self.next_button = self._tool("▶")
        self.version = QLabel()
        self.version.setStyleSheet("color:#555;")
        foot = QHBoxLayout()
        foot.addWidget(self.summary, 1)
        foot.addWidget(self.prev_button)
        foot.addWidget(self.version)
        foot.addWidget(self.next_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(3)
        layout.addLayout(head)
        layout.addWidget(self.details)
        layout.addWidget(self.view, 1)
        layout.addLayout(foot)

        self.reference_button.clicked.connect(lambda: self.reference_requested.emit(self.index))
        self.widen_button.clicked.connect(lambda: self.widen_requested.emit(self.index))
        self.solo_button.clicked.connect(lambda: self.solo_requested.emit(self.index))
        self._branches = (0, 1)
        self._speed_values: tuple[float | None, float | None] = (None, None)
        self.prev_button.clicked.connect(lambda: self._step_version(-1))
        self.next_button.clicked.connect(lambda: self._step_version(+1))
        self.set_versions(0, 1)
        self.retranslate()

    def retranslate(self) -> None:
        # The live speed changes several times a second while a reply streams: its
        # box has a fixed size, so a new figure repaints the label without laying
        # the pane out again; the box is resized only when a figure needs more room
        # or much less (set_speed). It sits beside the model's name (which the pane
        # combos above show too), so the details have a row of their own ("g64"
        # was cut to "g6" at 1280 px when they shared it with the speed).
        self.speed.setFixedHeight(self.speed.fontMetrics().height() + 2)
        self._show_speed(*self._speed_values)
        self.speed.setToolTip(self.tr("Decode tokens per second and time to the first token."))
        self.reference_button.setToolTip(self.tr("Make this pane the reference"))
        self.widen_button.setToolTip(self.tr("Widen this pane (again: back to equal widths)"))
        self.solo_button.setToolTip(self.tr("Show only this pane (again: show all)"))
        self.prev_button.setToolTip(self.tr("The previous version of this reply"))
        self.next_button.setToolTip(self.tr("The next version of this reply"))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def _tool(self, text: str) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setAutoRaise(True)
        return b

    def set_model(self, name: str, facts, is_reference: bool) -> None:
        role = self.tr(" (reference)") if is_reference else ""
        self.name.setText(f"<b>{name}</b>{role}")
        self.name.setToolTip(getattr(facts, "path", "") or name)
        parts = []
        if facts is not None:
            parts.append(f"{facts.backend}, {facts.device} {facts.dtype}")
            q = quantization_text(facts)
            parts.append(q if q else self.tr("dense"))
        self.details.setText(" · ".join(parts))
        self.details.setToolTip(self.details.text())  # the whole line where the pane is narrow
        self.reference_button.setEnabled(not is_reference)

    def set_speed(self, tokens_per_second: float | None, ttft: float | None) -> None:
        self._speed_values = (tokens_per_second, ttft)
        self._show_speed(tokens_per_second, ttft)

    def _show_speed(self, tokens_per_second: float | None, ttft: float | None) -> None:
        text = self._speed_text(tokens_per_second, ttft)
        need = self.speed.fontMetrics().horizontalAdvance(text) + 8 if text else 0
        have = self.speed.maximumWidth()
        if need > have or need < have - 40:
            self.speed.setFixedWidth(need)
        self.speed.setText(text)

    def _speed_text(self, tokens_per_second: float | None, ttft: float | None) -> str:
        parts = []
        if tokens_per_second:
            parts.append(self.tr("{v:.1f} tok/s").format(v=tokens_per_second))
        if ttft is not None:
            parts.append(self.tr("TTFT {v:.2f}s").format(v=ttft))
        return " · ".join(parts)

    def set_versions(self, active: int, count: int) -> None:
        self._branches = (active, count)
        self.version.setText(f"{active + 1}/{count}")
        for w in (self.version, self.prev_button, self.next_button):
            w.setVisible(count > 1)
        self.prev_button.setEnabled(active > 0)
        self.next_button.setEnabled(active < count - 1)

    def _step_version(self, step: int) -> None:
        active, count = self._branches
        target = active + step
        if 0 <= target < count:
            self.version_requested.emit(self.index, target)
