"""The main window: the models sidebar, the page bar, the status bar. It composes
and owns nothing else.

Contract for page developers
----------------------------
*Adding a page.* Create ``qdesk/gui/pages/<key>.py`` (the keys the window knows,
in page-bar order, are in ``qdesk.gui.pages.PAGE_MODULES``: quantize, chat,
compare, export, studies) with ``create_page(context: AppContext) -> QWidget``.
The widget has::

    page_key = "export"                      # its key
    def page_title(self) -> str: ...         # translated: return self.tr("Export")
    # optional:
    def run_action(self) -> None: ...        # Ctrl+R while the page is shown
    def cancel_action(self) -> None: ...     # Esc while the page is shown
    def save_state(self) -> None: ...        # the window is closing: keep options

Pages never import each other. Everything shared comes in ``context``
(``qdesk.gui.context.AppContext``):

- ``context.models`` (``ModelRegistry``): ``entries()``, ``ready()``,
  ``entry(key)``, ``selected()``, signals ``changed(key)``, ``removed(key)``,
  ``selection_changed(key)``, ``loaded(key)``; an entry's ``loaded`` is core's
  ``LoadedModel`` (``.backend``, ``.facts``, ``.model``, ``.hf_tokenizer``).
  ``load(text, backend)`` loads another model (a job); ``reload(key)``,
  ``unload(key)``.
- ``context.runner`` (``JobRunner``): every long task; see ``qdesk.gui.jobs``.
  Pass ``models=(entry.key, ...)`` for the models a job uses.
- ``context.settings`` (``Settings``): ``page_options(key)`` /
  ``set_page_options(key, dict)`` for a page's remembered options.
- Requests to other pages: ``context.request_chat([reference_key, other_key])``
  (the chat page listens to ``context.chat_requested``), ``context.request_export(key)``
  (``export_requested``), ``context.show_page(key)``; ``context.has_page(key)``
  says whether that page is installed (hide the button if not).
- Screenshot mode: ``context.script.register("<key>.<verb>", handler, usage)``
  in the page's constructor; see ``qdesk.gui.script`` (a handler returns
  ``None`` or a ``Wait``).

Every visible string goes through ``self.tr``; a widget sets its texts in
``retranslate()``, called from its constructor and from ``changeEvent`` on
``QEvent.LanguageChange``. Add the strings to
``resources/translations/qdesk_zh_CN.ts`` with ``pyside6-lupdate`` (see the
README) and translate them; ``tests/gui/test_translations.py`` fails on an
unfinished entry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QWidget,
)

from qdesk.core.errors import BadInput
from qdesk.gui.context import AppContext
from qdesk.gui.jobs import JobRunner
from qdesk.gui.model_registry import LOADING, ModelRegistry
from qdesk.gui.models_sidebar import ModelsSidebar
from qdesk.gui.pages import available_pages
from qdesk.gui.script import ScriptActions, Wait, save_screenshot
from qdesk.gui.settings import Settings
from qdesk.gui.widgets.jobs_status import JobsStatus
from qdesk.gui.widgets.memory_status import MemoryStatus

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1280, 800)


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, settings: Settings | None = None, translations=None,
                 page_factories=None) -> None:
        super().__init__()
        self.setObjectName("qdesk-main-window")
        self.settings = settings or Settings()
        self.translations = translations
        self.runner = JobRunner(self)
        self.models = ModelRegistry(self.runner, self.settings, self)
        self.context = AppContext(self.settings, self.runner, self.models, ScriptActions(), self)
        self.context.has_page = self.has_page
        self.context.set_language = self.set_language
        self.context.show_page_requested.connect(self.show_page)
        self._closing = False

        self.sidebar = ModelsSidebar(self.context)
        self.pages = QTabWidget()
        self.pages.setObjectName("pages")
        self.pages.setDocumentMode(True)
        self._pages: dict[str, QWidget] = {}
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("main-splitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(self.pages)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self.setCentralWidget(self.splitter)

        self.memory_status = MemoryStatus(self.models)
        self.jobs_status = JobsStatus(self.runner)
        self.stopping = QLabel()
        self.stopping.hide()
        self.statusBar().addWidget(self.memory_status)
        self.statusBar().addWidget(self.stopping)
        self.statusBar().addPermanentWidget(self.jobs_status)

        self._make_actions()
        self._register_script_actions()
        for factory in page_factories if page_factories is not None else available_pages():
            self.add_page(factory(self.context))
        self.setAcceptDrops(True)
        self.retranslate()
        self._restore_layout()

    # -- pages -------------------------------------------------------------------------
    def add_page(self, page: QWidget) -> None:
        """Put a page on the page bar (after the ones there)."""
        key = page.page_key
        if key in self._pages:
            raise ValueError(f"a page '{key}' is already there")
        self._pages[key] = page
        self.pages.addTab(page, page.page_title())

    def has_page(self, key: str) -> bool:
        return key in self._pages

    def page(self, key: str) -> QWidget | None:
        return self._pages.get(key)

    def show_page(self, key: str) -> None:
        page = self._pages.get(key)
        if page is not None:
            self.pages.setCurrentWidget(page)

    def current_page(self) -> QWidget | None:
        return self.pages.currentWidget()

    # -- menus and shortcuts --------------------------------------------------------------
    def _make_actions(self) -> None:
        self.act_open_folder = QAction(self, shortcut=QKeySequence.StandardKey.Open)
        self.act_open_folder.triggered.connect(self.sidebar.choose_folder)
        self.act_open_gguf = QAction(self, shortcut=QKeySequence("Ctrl+Shift+O"))
        self.act_open_gguf.triggered.connect(self.sidebar.choose_gguf)
        self.act_settings = QAction(self, shortcut=QKeySequence("Ctrl+,"))
        self.act_settings.triggered.connect(self.open_settings)
        self.act_quit = QAction(self, shortcut=QKeySequence.StandardKey.Quit)
        self.act_quit.triggered.connect(self.close)
        self.act_run = QAction(self, shortcut=QKeySequence("Ctrl+R"))
        self.act_run.triggered.connect(lambda: self._page_call("run_action"))
        self.act_cancel = QAction(self, shortcut=QKeySequence(Qt.Key.Key_Escape))
        self.act_cancel.triggered.connect(lambda: self._page_call("cancel_action"))
        self.file_menu = self.menuBar().addMenu("")
        for act in (self.act_open_folder, self.act_open_gguf, None, self.act_settings, None,
                    self.act_quit):
            self.file_menu.addSeparator() if act is None else self.file_menu.addAction(act)
        self.job_menu = self.menuBar().addMenu("")
        self.job_menu.addAction(self.act_run)
        self.job_menu.addAction(self.act_cancel)
        self.page_menu = self.menuBar().addMenu("")
        self.page_actions: list[QAction] = []
        for i in range(9):
            act = QAction(self, shortcut=QKeySequence(f"Ctrl+{i + 1}"))
            act.triggered.connect(lambda _=False, i=i: self.pages.setCurrentIndex(i))
            self.addAction(act)
            self.page_actions.append(act)

    def _page_call(self, name: str) -> None:
        method = getattr(self.current_page(), name, None)
        if callable(method):
            method()

    def retranslate(self) -> None:
        self.setWindowTitle(self.tr("qdesk — quantize and compare language models"))
        self.file_menu.setTitle(self.tr("&File"))
        self.act_open_folder.setText(self.tr("Open model &folder…"))
        self.act_open_gguf.setText(self.tr("Open &GGUF file…"))
        self.act_settings.setText(self.tr("&Settings…"))
        self.act_quit.setText(self.tr("&Quit"))
        self.job_menu.setTitle(self.tr("&Job"))
        self.act_run.setText(self.tr("&Run the page's job"))
        self.act_cancel.setText(self.tr("&Cancel the page's job"))
        self.page_menu.setTitle(self.tr("&Pages"))
        self.page_menu.clear()
        for i, key in enumerate(self._pages):
            self.pages.setTabText(i, self._pages[key].page_title())
            act = self.page_actions[i]
            act.setText(self._pages[key].page_title())
            self.page_menu.addAction(act)
        self.stopping.setText(self.tr("Stopping the running jobs before closing…"))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def set_language(self, language: str) -> None:
        """Show the window in ``language`` (en, zh_CN) now."""
        if self.translations is not None:
            self.translations.apply(language)
        self.context.language_changed.emit(language)

    def open_settings(self) -> None:
        from qdesk.gui.widgets.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        dialog.language_chosen.connect(self._language_setting_changed)
        dialog.open()

    def _language_setting_changed(self, setting: str) -> None:
        from qdesk.gui.i18n import resolve_language

        self.settings.language = setting
        self.set_language(resolve_language(setting))

    # -- drag and drop -------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.sidebar.request_load(url.toLocalFile())
        event.acceptProposedAction()

    # -- layout persistence ----------------------------------------------------------------
    def _restore_layout(self) -> None:
        geometry = self.settings.window_state("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(*DEFAULT_SIZE)
            self.splitter.setSizes([300, DEFAULT_SIZE[0] - 300])
        size = self.settings.value("window/size", None)
        if isinstance(size, QSize) and size.isValid():
            self.resize(size)  # restoreGeometry may shrink to a screen that was smaller
        state = self.settings.window_state("state")
        if state is not None:
            self.restoreState(state)
        for splitter in (self.splitter, self.sidebar.splitter):
            sizes = self.settings.window_state(splitter.objectName())
            if sizes is not None:
                splitter.restoreState(sizes)
        page = self.settings.value("window/page", "")
        if page in self._pages:
            self.show_page(page)

    def save_layout(self) -> None:
        self.settings.set_window_state("geometry", self.saveGeometry())
        self.settings.set_value("window/size", self.size())
        self.settings.set_window_state("state", self.saveState())
        for splitter in (self.splitter, self.sidebar.splitter):
            self.settings.set_window_state(splitter.objectName(), splitter.saveState())
        current = self.current_page()
        if current is not None:
            self.settings.set_value("window/page", current.page_key)
        for page in self._pages.values():
            save = getattr(page, "save_state", None)
            if callable(save):
                save()
        self.settings.sync()

    # -- closing ---------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if self.runner.jobs:
            if not self._closing:
                if self.runner.show_dialogs and not self._confirm_close():
                    event.ignore()
                    return
                self._closing = True
                self.stopping.show()
                self.runner.idle.connect(self.close, Qt.ConnectionType.QueuedConnection)
                self.runner.cancel_all()
            event.ignore()  # closed again when the last job has stopped
            return
        self.save_layout()
        # A worker that has handed back its result may still be leaving its thread.
        QThreadPool.globalInstance().waitForDone(10_000)
        self.models.close_all()
        super().closeEvent(event)
        self.closed.emit()

    def _confirm_close(self) -> bool:
        titles = "\n".join(f"• {j.title}" for j in self.runner.jobs)
        answer = QMessageBox.question(
            self, self.tr("Jobs are running"),
            self.tr("These jobs are still running:\n{jobs}\n\nCancel them and quit? "
                    "Nothing half-written is left behind.").format(jobs=titles),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    # -- screenshot mode -----------------------------------------------------------------
    def before_screenshot(self) -> None:
        """Let every page draw what it has buffered (plots redraw on timers)."""
        for page in self._pages.values():
            flush = getattr(page, "flush", None)
            if callable(flush):
                flush()

    def _register_script_actions(self) -> None:
        s = self.context.script
        s.register("load", self._script_load, "load MODEL [backend=auto|hf|llamacpp]")
        s.register("select", self._script_select, "select MODEL [backend=...]")
        s.register("unload", self._script_unload, "unload MODEL [backend=...]")
        s.register("int8", self._script_int8, "int8 MODEL on|off [backend=...]")
        s.register("page", self._script_page, "page KEY")
        s.register("language", self._script_language, "language en|zh_CN")
        s.register("resize", self._script_resize, "resize WIDTH HEIGHT")
        s.register("wait", self._script_wait, "wait MILLISECONDS")
        s.register("wait-jobs", self._script_wait_jobs, "wait-jobs")
        s.register("screenshot", self._script_screenshot, "screenshot PATH")

    def _script_load(self, text: str, backend: str = "auto") -> Wait:
        key = self.sidebar.request_load(text, backend)
        if key is None:
            raise BadInput(f"{text}: not loaded")

        def failed():
            entry = self.models.entry(key)
            if entry is None:
                return f"{text}: loading stopped"
            return entry.error or None

        return Wait(lambda: (e := self.models.entry(key)) is not None and e.state != LOADING,
                    f"{text} to load", failed=failed)

    def _script_select(self, text: str, backend: str = "auto") -> None:
        if not self.sidebar.select_text(text, backend):
            raise BadInput(f"{text}: not loaded")

    def _script_unload(self, text: str, backend: str = "auto") -> None:
        entry = self.models.find(text, backend)
        if entry is None or not self.models.unload(entry.key):
            raise BadInput(f"{text}: cannot unload it")

    def _script_int8(self, text: str, state: str, backend: str = "auto") -> None:
        entry = self.models.find(text, backend)
        if state not in ("on", "off"):
            raise BadInput(f"int8 wants on or off, not {state}")
        if entry is None or not self.models.set_int8_activations(entry.key, state == "on"):
            raise BadInput(f"{text}: its decoding cannot be switched")

    def _script_page(self, key: str) -> None:
        if key not in self._pages:
            raise BadInput(f"no page '{key}' (pages: {', '.join(self._pages)})")
        self.show_page(key)

    def _script_language(self, language: str) -> None:
        from qdesk.gui.i18n import LANGUAGES

        if language not in LANGUAGES:
            raise BadInput(f"language must be one of {', '.join(LANGUAGES)}, not {language}")
        self.set_language(language)

    def _script_resize(self, width: str, height: str) -> None:
        try:
            w, h = int(width), int(height)
        except ValueError:
            raise BadInput(f"resize wants two integers, not {width} {height}") from None
        self.resize(w, h)
        self.splitter.setSizes([min(300, w // 4), w - min(300, w // 4)])

    def _script_wait(self, ms: str) -> Wait:
        try:
            until = time.monotonic() + int(ms) / 1000
        except ValueError:
            raise BadInput(f"wait wants milliseconds, not {ms}") from None
        return Wait(lambda: time.monotonic() >= until, f"{ms} ms")

    def _script_wait_jobs(self) -> Wait:
        return Wait(self.runner.is_idle, "the running jobs")

    def _script_screenshot(self, path: str) -> Wait:
        outcome: list[str] = []

        def save():
            try:
                save_screenshot(self, Path(path))
                outcome.append("")
            except BadInput as e:
                outcome.append(str(e))

        QTimer.singleShot(300, save)  # let the last action's repaint settle
        return Wait(lambda: bool(outcome), f"the screenshot {path}",
                    failed=lambda: outcome[0] if outcome and outcome[0] else None)
