"""Composition root for the GUI: the QApplication and the main window."""

from __future__ import annotations

import sys


def run_app(model: str = "demo") -> int:
    from PySide6.QtWidgets import QApplication

    from qdesk.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qdesk")
    window = MainWindow()
    window.show()
    window.load_model(model)
    return app.exec()
