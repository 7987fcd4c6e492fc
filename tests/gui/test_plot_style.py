"""qdesk's plots show plain numbers: probabilities in (0, 1) are not rescaled by
an SI prefix (pyqtgraph drew 0.05-0.15 as 50-150 once an axis had a label)."""

from __future__ import annotations

import pyqtgraph as pg

from qdesk.gui.widgets.plot_style import style_plot


def test_a_unitless_axis_in_0_1_keeps_its_numbers(qtbot):
    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    plot = widget.getPlotItem()
    style_plot(plot, "this model")
    axis = plot.getAxis("bottom")
    axis.setLabel("p")
    plot.setXRange(0, 0.15, padding=0)
    widget.show()
    qtbot.waitExposed(widget)
    style_plot(plot, "本模型")  # a language change restyles the plot with its data shown
    plot.setXRange(0, 0.16, padding=0)
    assert axis.autoSIPrefixScale == 1.0
    assert axis.labelUnitPrefix == ""
    assert "0.05" in axis.tickStrings([0.05], axis.autoSIPrefixScale, 0.05)
