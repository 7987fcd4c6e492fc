"""One look for qdesk's plots: dark text on white, no SI prefixes on axes
(probabilities and KLD read better as plain numbers)."""

from __future__ import annotations

import pyqtgraph as pg

TEXT = "#303030"


def style_plot(plot: pg.PlotItem, title: str | None = None) -> None:
    plot.setMenuEnabled(False)
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setTextPen(TEXT)
        axis.setPen("#909090")
        axis.enableAutoSIPrefix(False)
    if title is not None:
        plot.setTitle(title, size="9pt", color=TEXT)
