"""The settings: language, where quantized models go, what opens at start."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from qdesk.gui.i18n import LANGUAGES

OUTPUT_DIR_KEY = "quantize/output_parent"
OPEN_DEMO_KEY = "start/open_demo"


class SettingsDialog(QDialog):
    language_chosen = Signal(str)  # "system" | "en" | "zh_CN"

    def __init__(self, settings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.language = QComboBox()
        self._languages = ("system", *LANGUAGES)
        for _ in self._languages:
            self.language.addItem("")
        self.language.setCurrentIndex(self._languages.index(settings.language))
        self.output_dir = QLineEdit(str(settings.value(OUTPUT_DIR_KEY, "") or ""))
        self.browse = QPushButton()
        self.browse.clicked.connect(self._browse)
        row = QWidget()
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.output_dir, 1)
        row_layout.addWidget(self.browse)
        self.open_demo = QCheckBox()
        self.open_demo.setChecked(str(settings.value(OPEN_DEMO_KEY, "true")).lower() == "true")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.form = QFormLayout(self)
        self.language_label, self.output_label = QLabel(), QLabel()
        self.form.addRow(self.language_label, self.language)
        self.form.addRow(self.output_label, row)
        self.form.addRow(self.open_demo)
        self.form.addRow(self.buttons)
        self.setMinimumWidth(520)
        self.retranslate()

    def retranslate(self) -> None:
        self.setWindowTitle(self.tr("Settings"))
        names = (self.tr("System language"), *LANGUAGES.values())
        for i, name in enumerate(names):
            self.language.setItemText(i, name)
        self.language_label.setText(self.tr("Language:"))
        self.output_label.setText(self.tr("Quantized models go to:"))
        self.output_dir.setPlaceholderText(self.tr("the qdesk data folder"))
        self.output_dir.setToolTip(self.tr("The folder the Quantize page suggests for new models"))
        self.browse.setText(self.tr("Browse…"))
        self.open_demo.setText(self.tr("Open the demo model at start"))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.tr("Where quantized models go"))
        if folder:
            self.output_dir.setText(folder)

    def accept(self) -> None:
        self.settings.set_value(OUTPUT_DIR_KEY, self.output_dir.text().strip())
        self.settings.set_value(OPEN_DEMO_KEY, "true" if self.open_demo.isChecked() else "false")
        chosen = self._languages[self.language.currentIndex()]
        if chosen != self.settings.language:
            self.language_chosen.emit(chosen)
        super().accept()
