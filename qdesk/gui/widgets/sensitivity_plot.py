"""The sensitivity search's measurement: each Linear's output error when rounded
at each bit width, one line per width (log scale: 2-bit errors are ten times
4-bit ones). Fed ``LayerSensitivity`` records; redrawn by the page's timer."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from qdesk.gui.widgets.layer_error_plot import BIT_COLORS


class SensitivityPlot(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLogMode(x=False, y=True)
        self.plot.showGrid(x=False, y=True, alpha=0.25)
        self.plot.getPlotItem().hideButtons()
        self.plot.getPlotItem().setMenuEnabled(False)
        for side in ("left", "bottom"):
            self.plot.getPlotItem().getAxis(side).enableAutoSIPrefix(False)
        self.legend = self.plot.addLegend(offset=(-10, 8), colCount=4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.hint)
        layout.addWidget(self.plot, 1)
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.errors: dict[int, np.ndarray] = {}
        self._curves: dict[int, pg.PlotDataItem] = {}
        self._dirty = False
        self.retranslate()

    def retranslate(self) -> None:
        pi = self.plot.getPlotItem()
        pi.setLabel("left", self.tr("relative output error (RTN)"))
        pi.setLabel("bottom", self.tr("Linear layer (in job order)"))
        self.hint.setText(self.tr("The sensitivity plan measures every layer at each width, then "
                                  "gives more bits where the error is largest until the budget "
                                  "is spent; the Plan tab shows what it chose."))
        self.legend.clear()
        for bits, curve in sorted(self._curves.items(), reverse=True):
            self.legend.addItem(curve, self.tr("{bits}-bit").format(bits=bits))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def reset(self, names: list[str]) -> None:
        self.names = list(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self.errors = {}
        for curve in self._curves.values():
            self.plot.removeItem(curve)
        self._curves = {}
        self.legend.clear()
        self._dirty = True

    def add(self, name: str, errors) -> None:
        """``errors``: (bits, rel_error) pairs of one Linear."""
        i = self._index.get(name)
        if i is None:
            return
        for bits, value in errors:
            bits = int(bits)
            if bits not in self.errors:
                self.errors[bits] = np.full(len(self.names), np.nan)
            self.errors[bits][i] = max(float(value), 1e-8)
        self._dirty = True

    def measured(self) -> int:
        if not self.errors:
            return 0
        return int(np.isfinite(next(iter(self.errors.values()))).sum())

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        x = np.arange(len(self.names), dtype=float)
        for bits, values in self.errors.items():
            curve = self._curves.get(bits)
            if curve is None:
                color = BIT_COLORS.get(bits, "#555555")
                curve = self.plot.plot(pen=pg.mkPen(color, width=1.5), symbol="o", symbolSize=3,
                                       symbolBrush=color, symbolPen=None, connect="finite")
                self._curves[bits] = curve
                self.legend.addItem(curve, self.tr("{bits}-bit").format(bits=bits))
            curve.setData(x, values)
