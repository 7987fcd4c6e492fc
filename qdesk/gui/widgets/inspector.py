"""The token inspector: this model's and the reference's next-token
distributions on the same prefix as horizontal bars, the figures of the
token, and the two branch actions.

*Continue from another token* regenerates the rest of the pane's reply from
an alternative; *follow the reference* (on a flip) forces the pane onto the
reference's top-1 there and continues. The widget emits the request; the page
runs it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QSize, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qdesk.gui.widgets.plot_style import style_plot

PANE_BAR = "#5c8fd6"
REF_BAR = "#9e9e9e"
CHOSEN_BAR = "#e08a2c"


class _Bars(pg.PlotWidget):
    """Horizontal bars, the most likely token on top, pieces on the left axis."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.setBackground("w")
        style_plot(self.getPlotItem(), title)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.getPlotItem().invertY(True)
        self.getPlotItem().setMenuEnabled(False)
        self.setXRange(0, 1, padding=0.02)
        self.getAxis("bottom").setLabel("p")
        font = self.font()
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        for axis in ("left", "bottom"):
            self.getAxis(axis).setStyle(tickFont=font)
        self.setMinimumHeight(120)
        self._item: pg.BarGraphItem | None = None
        self.values: list[tuple[int, float]] = []

    def sizeHint(self) -> QSize:
        return QSize(260, 150)

    def show_bars(self, ids, probs, chosen: int, color: str, piece: Callable[[int], str]) -> None:
        if self._item is not None:
            self.removeItem(self._item)
            self._item = None
        self.values = list(zip((int(i) for i in ids), (float(p) for p in probs)))
        if not self.values:
            self.getAxis("left").setTicks([[]])
            return
        y = np.arange(len(self.values), dtype=float)
        w = np.array([p for _, p in self.values])
        brushes = [pg.mkBrush(CHOSEN_BAR if i == chosen else color) for i, _ in self.values]
        self._item = pg.BarGraphItem(x0=0, y=y, height=0.7, width=w, brushes=brushes, pen=None)
        self.addItem(self._item)
        labels = [(float(k), _short(piece(i))) for k, (i, _) in enumerate(self.values)]
        self.getAxis("left").setTicks([labels])
        self.setYRange(-0.6, len(self.values) - 0.4, padding=0)
        self.setXRange(0, max(0.05, float(w.max())) * 1.05, padding=0)


def _short(text: str, n: int = 12) -> str:
    text = repr(text)[1:-1]
    return text if len(text) <= n else text[: n - 1] + "…"


class Inspector(QWidget):
    continue_requested = Signal(int, int, int)  # pane, token index, token id
    follow_requested = Signal(int, int)  # pane, token index
    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.piece: Callable[[int], str] = lambda i: f"#{i}"
        self.pane = self.turn = self.index = -1
        self.token = self.agreement = self.ref_top = None
        self.can_branch = True

        self.title = QLabel()
        self.title.setWordWrap(True)
        self.top_n = QSpinBox()
        self.top_n.setRange(5, 20)
        self.top_n.setValue(8)
        self.close_button = QPushButton()
        self.top_label = QLabel()
        head = QHBoxLayout()
        head.addWidget(self.top_label)
        head.addWidget(self.top_n)
        head.addStretch(1)
        head.addWidget(self.close_button)

        self.pane_bars = _Bars("")
        self.ref_bars = _Bars("")
        bars = QGridLayout()
        bars.addWidget(self.pane_bars, 0, 0)
        bars.addWidget(self.ref_bars, 1, 0)

        self.figures: dict[str, QLabel] = {}
        self.figure_names: dict[str, QLabel] = {}
        form = QFormLayout()
        for key in ("margin", "entropy", "p", "ref_margin", "kld", "dp"):
            self.figures[key], self.figure_names[key] = QLabel("–"), QLabel()
            form.addRow(self.figure_names[key], self.figures[key])

        self.alternatives = QComboBox()
        self.alternatives.setMinimumContentsLength(12)
        self.continue_button = QPushButton()
        self.follow_button = QPushButton()
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color:#606060;")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addLayout(head)
        layout.addLayout(bars)
        layout.addLayout(form)
        layout.addWidget(self.alternatives)
        layout.addWidget(self.continue_button)
        layout.addWidget(self.follow_button)
        layout.addWidget(self.note)
        layout.addStretch(1)

        self.top_n.valueChanged.connect(lambda _: self.redraw())
        self.close_button.clicked.connect(self.closed.emit)
        self.continue_button.clicked.connect(self._continue)
        self.follow_button.clicked.connect(
            lambda: self.follow_requested.emit(self.pane, self.index))
        self.setMinimumWidth(250)
        self.retranslate()

    def retranslate(self) -> None:
        self.top_n.setToolTip(self.tr("How many of the most likely tokens the bars show (5–20)."))
        self.close_button.setText(self.tr("Close"))
        self.top_label.setText(self.tr("Top"))
        style_plot(self.pane_bars.getPlotItem(), self.tr("this model"))
        style_plot(self.ref_bars.getPlotItem(), self.tr("reference, same prefix"))
        for key, label, tip in (
            ("margin", self.tr("Margin p1−p2"), self.tr("This model's top-1 minus top-2 probability.")),
            ("entropy", self.tr("Entropy"), self.tr("Of this model's distribution, in nats.")),
            ("p", self.tr("p(token)"), self.tr("This model's probability of the chosen token.")),
            ("ref_margin", self.tr("Reference margin"),
             self.tr("The reference's top-1 minus top-2 on the same prefix.")),
            ("kld", self.tr("KLD"), self.tr("KL(reference ‖ this model) over the whole vocabulary, nats.")),
            ("dp", self.tr("Δp"),
             self.tr("This model's minus the reference's probability of the chosen token.")),
        ):
            self.figure_names[key].setText(label)
            self.figure_names[key].setToolTip(tip)
            self.figures[key].setToolTip(tip)
        self.alternatives.setToolTip(self.tr("A token this model could have taken here."))
        self.continue_button.setText(self.tr("Continue from this token"))
        self.continue_button.setToolTip(self.tr(
            "Regenerate the rest of this pane's reply from the chosen alternative; "
            "the current reply is kept as a version you can switch back to."))
        self.follow_button.setText(self.tr("Follow the reference"))
        self.follow_button.setToolTip(self.tr(
            "Force this pane onto the reference's token here and continue: does this one "
            "flip explain everything after it?"))
        if self.token is not None:
            self.redraw()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def show_token(self, pane: int, turn: int, event, agreement, ref_top, can_branch: bool,
                   pane_name: str = "") -> None:
        self.pane, self.turn, self.index = pane, turn, event.index
        self.token, self.agreement, self.ref_top = event, agreement, ref_top
        self.can_branch = can_branch
        self.pane_name = pane_name
        where = self.tr("{name}, token {i}").format(name=pane_name, i=event.index) if pane_name \
            else self.tr("token {i}").format(i=event.index)
        self.title.setText(f"<b>{_short(event.text, 24)}</b> — {where}")
        self.redraw()

    def redraw(self) -> None:
        ev, a, ref = self.token, self.agreement, self.ref_top
        if ev is None:
            return
        n = self.top_n.value()
        self.pane_bars.show_bars(ev.top_ids[:n], ev.top_probs[:n], ev.token_id, PANE_BAR, self.piece)
        self.ref_bars.setVisible(ref is not None)
        if ref is not None:
            self.ref_bars.show_bars(ref.top_ids[:n], ref.top_probs[:n], ev.token_id, REF_BAR, self.piece)
        f = self.figures
        f["margin"].setText(f"{ev.margin:.4f}")
        f["entropy"].setText(f"{ev.entropy:.3f}")
        f["p"].setText(f"{ev.p_token:.4f}")
        f["ref_margin"].setText(f"{a.ref_margin:.4f}" if a is not None else "–")
        f["kld"].setText(f"{a.kld:.4f}" if a is not None else "–")
        f["dp"].setText(f"{a.dp:+.4f}" if a is not None else "–")
        self.alternatives.clear()
        for i, p in zip(ev.top_ids[:n], ev.top_probs[:n]):
            if i != ev.token_id:
                self.alternatives.addItem(f"{_short(self.piece(i), 20)}  ({p:.3f})", int(i))
        self.continue_button.setEnabled(self.can_branch and self.alternatives.count() > 0)
        follows = a is not None and a.ref_top_id != ev.token_id
        self.follow_button.setEnabled(self.can_branch and follows)
        if a is None:
            self.note.setText(self.tr("No reference statistics for this pane."))
        elif a.flip:
            self.note.setText(self.tr("Flip: the reference's top-1 here is {t}.").format(
                t=_short(self.piece(a.ref_top_id), 20)))
        else:
            self.note.setText("")
        if not self.can_branch:
            self.note.setText(self.note.text() + " " + self.tr(
                "Branching needs the pane's model and the last turn, with no reply running."))

    def _continue(self) -> None:
        token = self.alternatives.currentData()
        if token is not None:
            self.continue_requested.emit(self.pane, self.index, int(token))
