"""Per-layer output error as bars coloured by bits, growing as layers finish.

Values land in preallocated numpy buffers (``set_layer``, cheap); ``redraw``
(the page's timer) updates the one ``BarGraphItem`` when something changed.
A kept layer shows as a grey stub. Hovering a bar names its module.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

BIT_COLORS = {8: "#2e7d32", 4: "#1f77b4", 3: "#ff8f00", 2: "#c62828", 0: "#9e9e9e"}  # 0: kept


class LayerErrorPlot(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMinimumHeight(160)
        self.plot.showGrid(x=False, y=True, alpha=0.25)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.getPlotItem().hideButtons()
        self.plot.getPlotItem().setMenuEnabled(False)
        for side in ("left", "bottom"):
            self.plot.getPlotItem().getAxis(side).enableAutoSIPrefix(False)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brushes=[], pen=None)
        self.plot.addItem(self.bars)
        self.legend = QLabel()  # above the plot, so it never covers a bar
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot, 1)
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.errors = np.zeros(0)
        self.bits = np.zeros(0, dtype=np.int8)
        self.filled = np.zeros(0, dtype=bool)
        self._dirty = False
        self.plot.scene().sigMouseMoved.connect(self._hover)
        self.retranslate()

    def retranslate(self) -> None:
        pi = self.plot.getPlotItem()
        pi.setLabel("left", self.tr("relative output error"))
        pi.setLabel("bottom", self.tr("Linear layer (in job order)"))
        parts = []
        for bits, color in BIT_COLORS.items():
            name = self.tr("kept") if bits == 0 else self.tr("{bits}-bit").format(bits=bits)
            parts.append(f"<span style='color:{color}; font-size:14px'>■</span> {name}")
        self.legend.setText("&nbsp;&nbsp;&nbsp;".join(parts))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def reset(self, names: list[str]) -> None:
        """A new job over these Linears (the order of the job's events)."""
        self.names = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        n = len(self.names)
        self.errors = np.zeros(n)
        self.bits = np.zeros(n, dtype=np.int8)
        self.filled = np.zeros(n, dtype=bool)
        self.plot.setXRange(-1, max(1, n), padding=0.01)
        self._dirty = True
        self.redraw()

    def set_layer(self, name: str, error: float, bits: int) -> None:
        """One layer done (``bits`` 0: kept)."""
        i = self._index.get(name)
        if i is None:  # a layer the reset did not name: append it
            i = len(self.names)
            self.names.append(name)
            self._index[name] = i
            self.errors = np.append(self.errors, 0.0)
            self.bits = np.append(self.bits, 0).astype(np.int8)
            self.filled = np.append(self.filled, False)
        self.errors[i] = error
        self.bits[i] = bits
        self.filled[i] = True
        self._dirty = True

    def bar_count(self) -> int:
        return int(self.filled.sum())

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        idx = np.flatnonzero(self.filled)
        heights = self.errors[idx].copy()
        kept = self.bits[idx] == 0
        if kept.any():  # a stub, so a kept layer is visible
            top = float(self.errors[self.filled].max()) if self.filled.any() else 1.0
            heights[kept] = 0.02 * (top or 1.0)
        brushes = [QColor(BIT_COLORS.get(int(b), "#555555")) for b in self.bits[idx]]
        self.bars.setOpts(x=idx.astype(float), height=heights, width=0.8, brushes=brushes, pen=None)

    def _hover(self, pos) -> None:
        if not self.names:
            return
        point = self.plot.getPlotItem().vb.mapSceneToView(pos)
        i = int(round(point.x()))
        if 0 <= i < len(self.names) and self.filled[i]:
            label = self.tr("kept") if self.bits[i] == 0 else f"{self.bits[i]}-bit"
            self.plot.setToolTip(f"{self.names[i]}\n{label} · {self.errors[i]:.4f}")
        else:
            self.plot.setToolTip("")
