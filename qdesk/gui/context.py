"""What every page receives: the shared state of the window, and the requests
pages make of each other without importing each other."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from qdesk.gui.jobs import JobRunner
from qdesk.gui.model_registry import ModelRegistry
from qdesk.gui.script import ScriptActions
from qdesk.gui.settings import Settings


class AppContext(QObject):
    """``models``: the loaded models and the sidebar's selection; ``runner``: the
    one job runner; ``settings``; ``script``: the screenshot-mode actions.

    Cross-page requests are signals: a page asks, the window (and the page that
    serves the request) listen. A request for a page that is not installed is
    answered by ``has_page`` being False; pages hide the button then.
    """

    show_page_requested = Signal(str)  # page key
    chat_requested = Signal(list)  # model keys, the reference first
    export_requested = Signal(str)  # model key
    language_changed = Signal(str)  # "en" | "zh_CN", after the translators changed

    def __init__(self, settings: Settings, runner: JobRunner, models: ModelRegistry,
                 script: ScriptActions, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.runner = runner
        self.models = models
        self.script = script
        self.has_page: Callable[[str], bool] = lambda key: False  # set by the window
        self.set_language: Callable[[str], None] = lambda language: None  # set by the window

    def request_chat(self, model_keys: list[str]) -> None:
        """Open the chat page with these models (the reference first)."""
        self.chat_requested.emit(list(model_keys))
        self.show_page_requested.emit("chat")

    def request_export(self, model_key: str) -> None:
        self.export_requested.emit(model_key)
        self.show_page_requested.emit("export")

    def show_page(self, key: str) -> None:
        self.show_page_requested.emit(key)
