"""Composition root for the GUI: the QApplication, the language, the main
window, and screenshot mode.

``run_app`` is what ``qdesk gui`` calls once the system check passed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


# Qt's own chatter that says nothing to a user (the offscreen plugin's, in screenshot mode).
_QT_NOISE = ("propagateSizeHints",)


def _qt_messages(mode, context, message: str) -> None:
    """Qt's warnings go to the log, not to stderr: qdesk reports its own errors."""
    if any(n in message for n in _QT_NOISE):
        return
    from PySide6.QtCore import QtMsgType

    level = logging.DEBUG if mode in (QtMsgType.QtDebugMsg, QtMsgType.QtInfoMsg) else logging.WARNING
    logging.getLogger("qt").log(level, "%s", message)


def make_application():
    """The QApplication (one per process), with qdesk's names set."""
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    qInstallMessageHandler(_qt_messages)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qdesk")
    app.setOrganizationName("qdesk")
    return app


def prepare_libraries(models: list[str] | tuple[str, ...] = ()) -> None:
    """Import torch and transformers now, before the window shows, and keep their
    objects out of every later garbage collection (see qdesk.core.warmup and
    qdesk.gui.garbage): the first model load then does not freeze the window.
    When the demo is among ``models``, its tokenizer is parsed now too (the one
    part of its load that holds the GIL for long: qdesk.core.models.tokenizer_pool)."""
    import gc

    from qdesk.core.warmup import import_model_libraries

    import_model_libraries()
    # The window's thread never computes in parallel: an OpenMP team of its own
    # would slow every job's (qdesk.core.threads).
    from qdesk.core.threads import keep_openmp_off_this_thread

    keep_openmp_off_this_thread()
    if "demo" in models:
        from qdesk.core.models.demo import demo_dense_dir
        from qdesk.core.models.tokenizer_pool import prepare

        folder = demo_dense_dir()
        if (folder / "config.json").is_file():  # made on first use otherwise
            try:
                prepare(folder)
            except Exception:  # the load itself will say what is wrong
                log.debug("preparing the demo's tokenizer", exc_info=True)
    gc.collect()
    gc.freeze()


def stop_on_signals(window) -> list[int]:
    """SIGTERM or Ctrl+C in the terminal: cancel the jobs (nothing half-written
    is left) and close, without asking. Python runs a signal handler only between
    bytecodes and Qt's event loop runs none, so a timer wakes the interpreter
    every 200 ms. Returns the list the caught signal numbers are appended to."""
    import signal

    from PySide6.QtCore import QTimer

    caught: list[int] = []

    def stop(signum, _frame) -> None:
        caught.append(signum)
        window.runner.show_dialogs = False
        window.close()  # cancels what runs, closes when the last job has stopped

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    timer = QTimer(window)
    timer.timeout.connect(lambda: None)
    timer.start(200)
    return caught


def run_app(models: list[str] | None = None, script: Path | None = None,
            screenshot: Path | None = None, language: str | None = None,
            size: tuple[int, int] | None = None) -> int:
    """Open the window with ``models`` loaded; with ``script``, run it, save
    ``screenshot`` and return the exit code (see qdesk.gui.script)."""
    from qdesk.core.threads import configure_openmp

    configure_openmp()
    from qdesk.gui.garbage import GuiGarbageCollector
    from qdesk.gui.i18n import Translations, resolve_language
    from qdesk.gui.main_window import MainWindow
    from qdesk.gui.script import ScriptRunner, read_script
    from qdesk.gui.settings import Settings
    from qdesk.gui.widgets.settings_dialog import OPEN_DEMO_KEY

    lines = read_script(script) if script is not None else None  # bad script: exit 2 before Qt
    app = make_application()
    settings = Settings()
    if models is None:
        open_demo = str(settings.value(OPEN_DEMO_KEY, "true")).lower() == "true"
        models = ["demo"] if open_demo and lines is None else []
    prepare_libraries(models)
    collector = GuiGarbageCollector()  # on the GUI thread, kept short (see qdesk.gui.garbage)
    translations = Translations(app)
    translations.apply(language or resolve_language(settings.language))
    window = MainWindow(settings, translations)
    collector.attach(window)
    if size is not None:
        window.resize(*size)
    window.show()
    for text in models:
        window.sidebar.request_load(text)
    stopped = stop_on_signals(window)
    if lines is None:
        code = app.exec()
        settings.sync()  # the window's geometry; the caller may skip Qt's teardown
        if stopped:
            print("qdesk: cancelled", file=sys.stderr)
            return 130
        return code
    outcome: list[tuple[int, str]] = []
    runner = ScriptRunner(window, lines, screenshot)

    def finished(code: int, message: str) -> None:
        outcome.append((code, message))
        window.context.runner.show_dialogs = False
        window.close()  # cancels what still runs, then closes (closed -> quit)

    runner.finished.connect(finished)
    window.closed.connect(app.quit)
    runner.start()
    app.exec()
    settings.sync()
    if stopped and not outcome:
        print("qdesk: cancelled", file=sys.stderr)
        return 130
    code, message = outcome[0] if outcome else (2, "the window closed before the script ended")
    if message:
        print(f"qdesk: error: {message}", file=sys.stderr)
    return code
