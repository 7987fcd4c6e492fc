"""Live graphs under the panes: tokens per reply, margin per token with flips,
KLD per token. One colour per pane, a legend.

Tokens land in preallocated numpy buffers (``add_token``, cheap); one timer
(about 50 ms) redraws what changed with ``setData`` on curves that already
exist, so a fast model never floods the GUI. Clicking a point emits
``token_clicked(pane, index)``. ``save_png`` and ``save_csv`` export them.
"""

from __future__ import annotations

import csv
import html
import io
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from qdesk.gui.widgets.plot_style import style_plot

PANE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
REDRAW_MS = 50  # the fastest redraw
# The share of the GUI thread the graphs may paint in while replies stream. A
# paint holds the GIL, and the chat's worker waits for the GIL after every
# operation, so a share of the GUI thread costs the chat more than that share of
# its tokens/s (benchmarks/bench_chat_ui.py). So the redraw interval follows
# the measured cost of a redraw (the plots' new data and their paint): 50 ms
# where that is cheap, about 0.35 s on the 2-core machine, where it takes about
# 7 ms (a paint 4-5 ms: 15 ms before the axes were cached as pixmaps, see
# plot_style).
PAINT_BUDGET = 0.02


def _step_up(value: int, least: int) -> int:
    """The smallest of least, 2 least, 4 least, ... that holds value."""
    step = least
    while value > step:
        step *= 2
    return step


class _TimedGraphicsLayout(pg.GraphicsLayoutWidget):
    """A GraphicsLayoutWidget that keeps a running mean of its paint time."""

    paint_seconds = 0.0

    def paintEvent(self, event) -> None:
        t = time.perf_counter()
        super().paintEvent(event)
        self.paint_seconds = 0.7 * self.paint_seconds + 0.3 * (time.perf_counter() - t)


class _Series:
    """One pane's per-token values, grown by doubling."""

    def __init__(self, capacity: int = 256) -> None:
        self.n = 0
        self.margin = np.zeros(capacity, dtype=np.float32)
        self.kld = np.full(capacity, np.nan, dtype=np.float32)
        self.flip = np.zeros(capacity, dtype=bool)

    def put(self, index: int, margin: float, kld: float | None, flip: bool) -> None:
        if index >= self.margin.size:
            grow = max(self.margin.size * 2, index + 1)
            for name, fill in (("margin", 0.0), ("kld", np.nan), ("flip", False)):
                old = getattr(self, name)
                new = np.full(grow, fill, dtype=old.dtype)
                new[: old.size] = old
                setattr(self, name, new)
        self.margin[index] = margin
        self.kld[index] = np.nan if kld is None else kld
        self.flip[index] = flip
        self.n = index + 1

    def truncate(self, n: int) -> None:
        self.n = n
        self.kld[n:] = np.nan
        self.flip[n:] = False


class ReplyGraphs(QWidget):
    token_clicked = Signal(int, int)  # pane, token index

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = _TimedGraphicsLayout()
        self.view.setBackground("w")
        # Below about 165 px the three plots' tick labels overlap (at 1024x640).
        self.view.setMinimumHeight(165)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setStyleSheet("background:white; padding:2px 6px;")
        self.legend.setWordWrap(True)
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.legend)
        self.bars = self.view.addPlot(row=0, col=0)
        self.margin_plot = self.view.addPlot(row=0, col=1)
        self.kld_plot = self.view.addPlot(row=0, col=2)
        self.view.ci.layout.setColumnStretchFactor(0, 1)
        self.view.ci.layout.setColumnStretchFactor(1, 3)
        self.view.ci.layout.setColumnStretchFactor(2, 2)
        for p in (self.bars, self.margin_plot, self.kld_plot):
            p.showGrid(x=False, y=True, alpha=0.25)
            # Ranges are set by hand, in steps: auto-ranging on every redraw made
            # each one cost ~13 ms of the GUI thread (measured), CPU the models need.
            p.disableAutoRange()
        self.margin_plot.setYRange(0, 1, padding=0.02)
        self._x_span = 0
        self._kld_top = 0.0
        self.bars.getAxis("bottom").setStyle(showValues=False)
        self.names: list[str] = []
        self.series: list[_Series] = []
        self._curves: list[pg.PlotDataItem] = []
        self._flip_items: list[pg.ScatterPlotItem] = []
        self._kld_curves: list[pg.PlotDataItem] = []
        self._bar_item: pg.BarGraphItem | None = None
        self._bar_labels: list[pg.TextItem] = []
        self._dirty = False
        self._force = True  # redraw every pane, changed or not
        self._drawn: dict[int, int] = {}  # pane -> tokens drawn
        self._bar_counts: list[int] = []
        self.redraws = 0
        self._update_seconds = 0.0
        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._redraw)
        self.timer.start()
        self.margin_plot.scene().sigMouseClicked.connect(self._clicked)
        self.retranslate()

    def retranslate(self) -> None:
        style_plot(self.bars, self.tr("tokens per reply"))
        style_plot(self.margin_plot, self.tr("margin p1−p2 per token, flips ◆"))
        style_plot(self.kld_plot, self.tr("KLD per token"))
        self.margin_plot.getAxis("bottom").setLabel(self.tr("token"))
        self.kld_plot.getAxis("bottom").setLabel(self.tr("token"))
        self._show_legend()  # "(reference)" in the new language

    def _show_legend(self) -> None:
        names = getattr(self, "names", [])
        self.legend.setText("&nbsp;&nbsp;&nbsp;".join(
            f"<span style='color:{PANE_COLORS[i % len(PANE_COLORS)]}'>■</span> {html.escape(n)}"
            + (self.tr(" (reference)") if i == 0 and len(names) > 1 else "")
            for i, n in enumerate(names)))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # -- data --
    def set_panes(self, names: list[str]) -> None:
        for item in self._curves + self._flip_items:
            self.margin_plot.removeItem(item)
        for item in self._kld_curves:
            self.kld_plot.removeItem(item)
        self.names = list(names)
        self._show_legend()
        self.series = [_Series() for _ in names]
        self._curves, self._flip_items, self._kld_curves = [], [], []
        for i in range(len(names)):
            color = PANE_COLORS[i % len(PANE_COLORS)]
            curve = self.margin_plot.plot(pen=pg.mkPen(color, width=1.5))
            curve.setClipToView(True)
            curve.setDownsampling(auto=True, method="peak")
            flips = pg.ScatterPlotItem(symbol="d", size=9, brush=pg.mkBrush(color),
                                       pen=pg.mkPen("#202020", width=0.8))
            self.margin_plot.addItem(flips)
            kld = self.kld_plot.plot(pen=pg.mkPen(color, width=1.5))
            kld.setClipToView(True)
            self._curves.append(curve)
            self._flip_items.append(flips)
            self._kld_curves.append(kld)
        self._force = self._dirty = True

    def clear_replies(self) -> None:
        for s in self.series:
            s.truncate(0)
        self._force = self._dirty = True

    def add_token(self, pane: int, index: int, margin: float, kld: float | None, flip: bool) -> None:
        self.series[pane].put(index, margin, kld, flip)
        self._dirty = True

    def set_reply(self, pane: int, margins, klds, flips) -> None:
        """A whole reply at once (a loaded conversation, another branch)."""
        s = self.series[pane]
        s.truncate(0)
        for i, (m, k, f) in enumerate(zip(margins, klds, flips)):
            s.put(i, m, k, f)
        self._force = self._dirty = True

    def truncate(self, pane: int, n: int) -> None:
        self.series[pane].truncate(n)
        self._force = self._dirty = True

    # -- what is drawn (tests read the items themselves) --
    def drawn_counts(self) -> list[int]:
        if self._bar_item is None:
            return []
        return [int(h) for h in self._bar_item.opts["height"]]

    def drawn_flips(self, pane: int) -> list[int]:
        x, _ = self._flip_items[pane].getData()
        return [int(v) for v in x]

    def drawn_margins(self, pane: int) -> np.ndarray:
        _, y = self._curves[pane].getOriginalDataset()
        return np.asarray(y if y is not None else [])

    def flush(self) -> None:
        """Redraw now (tests, exports)."""
        self._force = self._dirty = True
        self._redraw()

    def _redraw(self) -> None:
        if not self._dirty:
            return
        started = time.perf_counter()
        self._dirty = False
        self.redraws += 1
        counts = []
        for i, (s, curve, flips, kld) in enumerate(
                zip(self.series, self._curves, self._flip_items, self._kld_curves)):
            counts.append(s.n)
            if self._drawn.get(i) == s.n and not self._force:
                continue  # this pane has nothing new
            self._drawn[i] = s.n
            x = np.arange(s.n, dtype=np.float32)
            curve.setData(x, s.margin[: s.n])
            f = np.flatnonzero(s.flip[: s.n])
            flips.setData(f.astype(np.float32), s.margin[f])
            if s.n and not np.all(np.isnan(s.kld[: s.n])):
                kld.setData(x, s.kld[: s.n], connect="finite")
            else:
                kld.setData([], [])
        self._force = False
        self._set_ranges(counts)
        if counts != self._bar_counts:
            self._draw_bars(counts)
        # what a redraw costs the GUI thread: the data handed to the plots here,
        # and the paint that follows
        self._update_seconds = 0.7 * self._update_seconds + 0.3 * (time.perf_counter() - started)
        cost = self.view.paint_seconds + self._update_seconds
        self.timer.setInterval(max(REDRAW_MS, int(1000 * cost / PAINT_BUDGET)))

    def _set_ranges(self, counts: list[int]) -> None:
        # Ranges grow in steps that double: an axis whose range changes draws its
        # labels again (cached otherwise, plot_style), which while a reply
        # streams cost more of the GUI thread than the curves themselves.
        span = _step_up(max(counts, default=0), 16)
        if span != self._x_span:
            self._x_span = span
            for p in (self.margin_plot, self.kld_plot):
                p.setXRange(-0.5, span - 0.5, padding=0.01)
        klds = [float(np.nanmax(s.kld[: s.n])) for s in self.series
                if s.n and not np.all(np.isnan(s.kld[: s.n]))]
        top = max(klds, default=0.0)
        # The ceiling doubles from 1/1024 nats as needed and only halves when the
        # values shrink fourfold (a new reply): each change redraws the axis.
        if top > self._kld_top or top < self._kld_top / 4 or self._kld_top == 0.0:
            ceiling = 2.0 ** -10
            while ceiling < top * 1.1:
                ceiling *= 2
            if ceiling != self._kld_top:
                self._kld_top = ceiling
                self.kld_plot.setYRange(0, ceiling, padding=0)

    def _draw_bars(self, counts: list[int]) -> None:
        """Bars and labels are made once per pane count, then only moved."""
        self._bar_counts = list(counts)
        if self._bar_item is None or len(self._bar_labels) != len(counts):
            if self._bar_item is not None:
                self.bars.removeItem(self._bar_item)
            for t in self._bar_labels:
                self.bars.removeItem(t)
            brushes = [pg.mkBrush(PANE_COLORS[i % len(PANE_COLORS)]) for i in range(len(counts))]
            self._bar_item = pg.BarGraphItem(x=np.arange(len(counts), dtype=float),
                                             height=np.zeros(len(counts)), width=0.6,
                                             brushes=brushes, pen=None)
            self.bars.addItem(self._bar_item)
            self._bar_labels = [pg.TextItem("", color="#202020", anchor=(0.5, 1.0))
                                for _ in counts]
            for label in self._bar_labels:
                self.bars.addItem(label)
            self.bars.setXRange(-0.6, max(len(counts), 1) - 0.4, padding=0)
        self._bar_item.setOpts(height=np.array(counts, dtype=float))
        for i, (n, label) in enumerate(zip(counts, self._bar_labels)):
            label.setText(str(n) if i == 0 else f"{n} ({n - counts[0]:+d})")
            label.setPos(i, n)
        top = max(counts, default=1) or 1
        ceiling = _step_up(int(top * 1.15) + 1, 8)
        if ceiling != getattr(self, "_bar_ceiling", None):
            self._bar_ceiling = ceiling
            self.bars.setYRange(0, ceiling, padding=0)

    # -- clicks --
    def pick(self, x: float, y: float) -> tuple[int, int] | None:
        """The (pane, index) of the margin point nearest to plot coordinates (x, y)."""
        best = None
        index = int(round(x))
        for pane, s in enumerate(self.series):
            if 0 <= index < s.n:
                d = abs(float(s.margin[index]) - y)
                if best is None or d < best[0]:
                    best = (d, pane)
        return None if best is None else (best[1], index)

    def _clicked(self, event) -> None:
        vb = self.margin_plot.getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        p = vb.mapSceneToView(event.scenePos())
        hit = self.pick(p.x(), p.y())
        if hit is not None:
            self.token_clicked.emit(*hit)

    # -- export --
    def csv_text(self) -> str:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["pane", "model", "token", "margin", "kld", "flip"])
        for pane, (name, s) in enumerate(zip(self.names, self.series)):
            for i in range(s.n):
                k = "" if np.isnan(s.kld[i]) else f"{float(s.kld[i]):.6g}"
                w.writerow([pane, name, i, f"{float(s.margin[i]):.6g}", k, int(s.flip[i])])
        return out.getvalue()

    def save_csv(self, path: Path) -> None:
        from qdesk.core.atomic import write_text_atomic

        write_text_atomic(Path(path), self.csv_text())

    def save_png(self, path: Path) -> None:
        """The three graphs as one image (temporary name, then rename)."""
        import os
        import tempfile

        self.flush()
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            if not self.view.grab().save(tmp, "PNG"):
                raise OSError(f"cannot write {path}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
