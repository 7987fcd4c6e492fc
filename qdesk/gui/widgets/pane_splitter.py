"""1–4 chat panes side by side in a splitter; a pane can be widened or shown
alone, and back."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QWidget

from qdesk.gui.widgets.pane import PaneView

MAX_PANES = 4


class PaneSplitter(QSplitter):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.setChildrenCollapsible(False)
        self.panes = [PaneView(i) for i in range(MAX_PANES)]
        for p in self.panes:
            self.addWidget(p)
            p.widen_requested.connect(self.toggle_widen)
            p.solo_requested.connect(self.toggle_solo)
        self.count_shown = 1
        self.widened: int | None = None
        self.solo: int | None = None
        self.set_count(1)

    def set_count(self, n: int) -> None:
        self.count_shown = max(1, min(MAX_PANES, n))
        self.widened = self.solo = None
        self._layout()

    def toggle_widen(self, index: int) -> None:
        self.solo = None
        self.widened = None if self.widened == index else index
        self._layout()

    def toggle_solo(self, index: int) -> None:
        self.widened = None
        self.solo = None if self.solo == index else index
        self._layout()

    def _layout(self) -> None:
        n = self.count_shown
        for i, p in enumerate(self.panes):
            p.setVisible(i < n and (self.solo is None or self.solo == i))
        total = max(self.width(), 400)
        if self.solo is not None:
            sizes = [total if i == self.solo else 0 for i in range(MAX_PANES)]
        elif self.widened is not None and n > 1:
            unit = total / (n + 2)  # the widened pane gets three shares
            sizes = [int(unit * (3 if i == self.widened else 1)) if i < n else 0
                     for i in range(MAX_PANES)]
        else:
            sizes = [total // n if i < n else 0 for i in range(MAX_PANES)]
        self.setSizes(sizes)
