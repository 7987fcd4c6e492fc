"""The colour scale for a token's top-1/top-2 margin, and its legend.

A flip needs a margin smaller than about twice the logit error, so near ties
(red) are where a quantized model can choose differently; confident tokens
(green) almost never flip.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

# (upper bound of the margin, background colour), the last bound 1.0 inclusive
MARGIN_BANDS: tuple[tuple[float, str], ...] = (
    (0.05, "#f4a3a3"),
    (0.2, "#f9cf94"),
    (0.5, "#f3eda0"),
    (1.0, "#cdeccb"),
)
FLIP_COLOR = "#c62828"
HIGHLIGHT_COLOR = "#90caf9"


def margin_color(margin: float) -> str:
    for bound, color in MARGIN_BANDS:
        if margin < bound:
            return color
    return MARGIN_BANDS[-1][1]


class MarginLegend(QWidget):
    """One swatch per band, and how a flip is marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.title = QLabel()
        layout.addWidget(self.title)
        lo = 0.0
        for bound, color in MARGIN_BANDS:
            text = f"{lo:g}–{bound:g}" if bound < 1.0 else f"≥ {lo:g}"
            swatch = QLabel(text)
            swatch.setStyleSheet(
                f"background:{color}; color:#202020; padding:1px 5px; border-radius:3px;")
            layout.addWidget(swatch)
            lo = bound
        self.flip = QLabel()
        self.flip.setStyleSheet(
            f"color:{FLIP_COLOR}; font-weight:bold; text-decoration: underline; padding:1px 4px;")
        layout.addWidget(self.flip)
        layout.addStretch(1)
        self.retranslate()

    def retranslate(self) -> None:
        self.title.setText(self.tr("Margin p1−p2:"))
        self.title.setToolTip(self.tr(
            "The gap between the model's two most likely tokens. A small gap is a near tie: "
            "a little quantization error can change the choice there."))
        self.flip.setText(self.tr("flip"))
        self.flip.setToolTip(self.tr(
            "This model's top-1 differs from the reference's on the same prefix."))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)
