"""Quality against size: mean KLD against bits per weight for every model
compared so far against one reference, so the best trade-off is visible."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget

from qdesk.gui.widgets.plot_style import style_plot


class QualitySizePlot(pg.PlotWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("w")
        self.setMenuEnabled(False)
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setLogMode(y=True)
        self.points: list[tuple[str, float, float]] = []  # (model, bpw, mean KLD)
        self.retranslate()

    def retranslate(self) -> None:
        style_plot(self.getPlotItem(), self.tr("quality vs size (this reference)"))
        self.getAxis("bottom").setLabel(self.tr("bits per weight"))
        self.getAxis("left").setLabel(self.tr("mean KLD (log)"))

    def show_points(self, points: list[tuple[str, float, float]],
                    colors: dict[str, str] | None = None) -> None:
        """points: (model, bits per weight, mean KLD); colors: model -> colour
        (the models of the latest comparison), the others grey."""
        self.clear()
        self.points = list(points)
        if not points:
            return
        x = np.array([p[1] for p in points], dtype=float)
        y = np.array([max(p[2], 1e-9) for p in points], dtype=float)
        colors = colors or {}
        brushes = [pg.mkBrush(colors.get(p[0], "#9e9e9e")) for p in points]
        self.addItem(pg.ScatterPlotItem(x=x, y=np.log10(y), size=10, brush=brushes,
                                        pen=pg.mkPen("#202020")))
        right = float(x.max())
        for name, bx, by in points:
            # labels of the rightmost points hang to the left, inside the plot
            label = pg.TextItem(name if len(name) <= 24 else name[:23] + "…", color="#303030",
                                anchor=(1, 1) if bx == right and len(points) > 1 else (0, 1))
            label.setPos(bx, np.log10(max(by, 1e-9)))
            self.addItem(label)
        self.setXRange(float(x.min()) - 0.7, float(x.max()) + 0.7 + 2.5 * (len(points) == 1))
