"""The reply-length study: mean reply tokens per model and category with
their 95% intervals as bars with error bars."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from qdesk.gui.widgets.plot_style import style_plot
from qdesk.gui.widgets.reply_graphs import PANE_COLORS


class ReplyLengthPlot(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setMenuEnabled(False)
        self.showGrid(y=True, alpha=0.25)
        self.legend = self.addLegend(offset=(-4, 4), labelTextSize="8pt",
                                     brush=pg.mkBrush(255, 255, 255, 210))
        self.bars: dict[str, list[tuple[float, float, float]]] = {}  # model -> (mean, lo, hi)
        self.retranslate()

    def retranslate(self) -> None:
        style_plot(self.getPlotItem(), self.tr("mean reply tokens, 95% interval"))
        self.getAxis("left").setLabel(self.tr("tokens"))

    def show_stats(self, stats) -> None:
        self.clear()
        self.legend.clear()
        self.bars = {}
        categories = list(dict.fromkeys(s.category for s in stats))
        models = list(dict.fromkeys(s.model for s in stats))
        n = max(len(models), 1)
        width = 0.8 / n
        for m, model in enumerate(models):
            rows = [next((s for s in stats if s.model == model and s.category == c), None)
                    for c in categories]
            mean = np.array([r.mean_tokens.value if r else np.nan for r in rows], dtype=float)
            lo = np.array([r.mean_tokens.lo if r else np.nan for r in rows], dtype=float)
            hi = np.array([r.mean_tokens.hi if r else np.nan for r in rows], dtype=float)
            self.bars[model] = list(zip(mean.tolist(), lo.tolist(), hi.tolist()))
            x = np.arange(len(categories)) - 0.4 + width * (m + 0.5)
            color = PANE_COLORS[m % len(PANE_COLORS)]
            bars = pg.BarGraphItem(x=x, height=np.nan_to_num(mean), width=width * 0.95,
                                   brush=pg.mkBrush(color), pen=None)
            self.addItem(bars)
            self.legend.addItem(bars, model)
            self.addItem(pg.ErrorBarItem(x=x, y=np.nan_to_num(mean), top=np.nan_to_num(hi - mean),
                                         bottom=np.nan_to_num(mean - lo), beam=width * 0.3,
                                         pen=pg.mkPen("#202020", width=1.2)))
        self.getAxis("bottom").setTicks([[(i, c) for i, c in enumerate(categories)]])
