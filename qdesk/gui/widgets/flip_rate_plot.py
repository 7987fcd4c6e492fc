"""Flip rate by the reference's top-1/top-2 margin, grouped bars per model:
the claim that flips need a small margin, on the user's own model."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from qdesk.gui.widgets.plot_style import style_plot
from qdesk.gui.widgets.reply_graphs import PANE_COLORS


class FlipRatePlot(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setMenuEnabled(False)
        self.showGrid(y=True, alpha=0.25)
        self.rates: list[list[float]] = []  # per model, per bin (NaN: no tokens there)
        self.retranslate()

    def retranslate(self) -> None:
        style_plot(self.getPlotItem(), self.tr("flip rate by the reference's margin p1−p2"))
        self.getAxis("left").setLabel(self.tr("flip rate (%)"))
        self.getAxis("bottom").setLabel(self.tr("reference margin, from"))

    def show_reports(self, reports) -> None:
        self.clear()
        self.rates = []
        if not reports:
            return
        bins = reports[0].flip_bins
        n = len(reports)
        width = 0.8 / n
        for m, r in enumerate(reports):
            rates = [np.nan if b.flip_rate is None else 100 * b.flip_rate for b in r.flip_bins]
            self.rates.append(rates)
            x = np.arange(len(bins)) - 0.4 + width * (m + 0.5)
            heights = np.nan_to_num(np.array(rates, dtype=float))
            item = pg.BarGraphItem(x=x, height=heights, width=width * 0.95,
                                   brush=pg.mkBrush(PANE_COLORS[(m + 1) % len(PANE_COLORS)]),
                                   pen=None)
            self.addItem(item)
        ticks = [(i, f"{b.lo:g}".replace("0.", ".") if b.lo else "0") for i, b in enumerate(bins)]
        self.getAxis("bottom").setTicks([ticks])
