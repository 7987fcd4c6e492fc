"""The KLD distribution of each model as its percentiles (log scale)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from qdesk.gui.widgets.plot_style import style_plot
from qdesk.gui.widgets.reply_graphs import PANE_COLORS


class KldPercentilePlot(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setMenuEnabled(False)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setLogMode(y=True)
        self.curves: dict[str, tuple[list[float], list[float]]] = {}
        self.retranslate()

    def retranslate(self) -> None:
        style_plot(self.getPlotItem(), self.tr("KLD percentiles"))
        self.getAxis("bottom").setLabel(self.tr("percentile"))
        self.getAxis("left").setLabel(self.tr("KLD (nats, log)"))

    def show_reports(self, reports) -> None:
        self.clear()
        self.curves = {}
        for m, r in enumerate(reports):
            # llama.cpp's order is largest first; plot by percentile, min (0) to max (100)
            pairs = [(_percent(label), v) for label, v in r.kld_percentiles]
            pairs.sort()
            x = [p for p, _ in pairs]
            y = [max(v, 1e-9) for _, v in pairs]
            self.curves[r.model] = (x, y)
            color = PANE_COLORS[(m + 1) % len(PANE_COLORS)]
            self.plot(np.array(x), np.array(y), pen=pg.mkPen(color, width=2), symbol="o",
                      symbolSize=5, symbolBrush=color)


def _percent(label: str) -> float:
    named = {"Maximum": 100.0, "Median": 50.0, "Minimum": 0.0}
    return named[label] if label in named else float(label.rstrip("%"))
