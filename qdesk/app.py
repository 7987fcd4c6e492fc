"""Composition root for the GUI: the QApplication and the main window."""

from __future__ import annotations

import sys


def run_app(model: str = "demo") -> int:
    from qdesk.core.threads import configure_openmp

    configure_openmp()
    from pyqtgraph.util.garbage_collector import GarbageCollector
    from PySide6.QtWidgets import QApplication

    from qdesk.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qdesk")
    # Python's collector may otherwise run in a worker thread and delete Qt
    # objects there, which crashes Qt: collect on the GUI thread, on a timer.
    collector = GarbageCollector(interval=1.0)  # noqa: F841 (kept alive until exit)
    window = MainWindow()
    window.show()
    window.load_model(model)
    return app.exec()
