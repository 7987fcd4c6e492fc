"""Screenshot mode: drive the window with a small script, then save a picture.

A script is a text file, one action per line, ``#`` starts a comment; words are
split like a shell's, ``key=value`` words become keyword arguments::

    resize 1280 800
    load demo
    page quantize
    quantize.set method=gptq bits=4 group_size=64 calib_samples=4 calib_tokens=64
    quantize.run
    language zh_CN
    screenshot docs/quantize-zh.png

The window registers ``load``, ``unload``, ``select``, ``page``, ``language``,
``resize``, ``wait`` (milliseconds), ``wait-jobs`` and ``screenshot`` (an extra
picture midway). A page registers its own (``context.script.register``) in its
constructor, named ``<page>.<verb>``. A handler gets the words as ``*args`` and
the ``key=value`` pairs as ``**kwargs`` (strings); it raises ``BadInput`` for
bad arguments and returns ``None`` when it is done or a ``Wait`` when the
script must wait for something (a job) before the next line.

Any error dialog the job runner shows while the script runs fails the script
with that message. Exit codes: 0 done and the screenshot written; 2 an action
failed or the script is bad (one line on stderr names the line and why).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from qdesk.core.errors import BadInput, QdeskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wait:
    """Wait until ``until()`` is true; ``failed()`` returning a reason ends the
    script with it. Both are polled on the GUI thread every 50 ms."""

    until: Callable[[], bool]
    what: str = ""
    timeout_s: float = 1800.0
    failed: Callable[[], str | None] | None = None


@dataclass(frozen=True)
class ScriptLine:
    number: int
    text: str
    action: str
    args: tuple[str, ...]
    kwargs: dict


def parse_script(text: str) -> list[ScriptLine]:
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as e:
            raise BadInput(f"script line {number}: {e}") from None
        if not words:
            continue
        args, kwargs = [], {}
        for w in words[1:]:
            key, eq, value = w.partition("=")
            if eq and key.replace("_", "").replace("-", "").isalnum():
                kwargs[key.replace("-", "_")] = value
            else:
                args.append(w)
        lines.append(ScriptLine(number, raw.strip(), words[0], tuple(args), kwargs))
    return lines


def read_script(path: Path) -> list[ScriptLine]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot read the script ({e.strerror})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: the script is not UTF-8 text") from None
    return parse_script(text)


class ScriptActions:
    """The registry of actions: name -> handler."""

    def __init__(self) -> None:
        self._handlers: dict[str, Callable] = {}
        self.usage: dict[str, str] = {}

    def register(self, name: str, handler: Callable, usage: str = "") -> None:
        self._handlers[name] = handler
        self.usage[name] = usage

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def handler(self, name: str) -> Callable:
        if name not in self._handlers:
            raise BadInput(f"unknown action '{name}' (known: {', '.join(self.names())})")
        return self._handlers[name]


class ScriptRunner(QObject):
    """Runs the lines one after another inside the event loop, then saves the
    screenshot; ``finished(code, message)`` at the end."""

    finished = Signal(int, str)

    def __init__(self, window, lines: list[ScriptLine], screenshot: Path | None,
                 settle_ms: int = 300) -> None:
        super().__init__(window)
        self.window = window
        self.lines = lines
        self.screenshot = Path(screenshot) if screenshot else None
        self.settle_ms = settle_ms
        self._index = 0
        self._wait: Wait | None = None
        self._wait_started = 0.0
        self._error: str | None = None
        self._done = False
        self._timer = QTimer(self)
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._poll)
        window.context.runner.error_shown.connect(self._on_error)

    def start(self) -> None:
        self.window.context.runner.show_dialogs = False
        QTimer.singleShot(0, self._next)

    def _current(self) -> str:
        if 0 < self._index <= len(self.lines):
            line = self.lines[self._index - 1]
            return f"script line {line.number} ({line.text})"
        return "script"

    def _on_error(self, title: str, message: str) -> None:
        if self._error is None:
            self._error = message

    def _next(self) -> None:
        if self._done:
            return
        if self._error is not None:
            return self._fail(self._error)
        if self._index >= len(self.lines):
            return self._finish()
        line = self.lines[self._index]
        self._index += 1
        log.info("script: %s", line.text)
        try:
            result = self.window.context.script.handler(line.action)(*line.args, **line.kwargs)
        except TypeError as e:
            return self._fail(f"wrong arguments ({e})")
        except QdeskError as e:
            return self._fail(str(e))
        except Exception as e:  # a page's action failed: say what, never a traceback
            log.exception("script action failed")
            return self._fail(f"{type(e).__name__}: {e}")
        if isinstance(result, Wait):
            self._wait = result
            self._wait_started = time.monotonic()
            self._timer.start()
        else:
            QTimer.singleShot(0, self._next)

    def _poll(self) -> None:
        wait = self._wait
        if wait is None:
            self._timer.stop()
            return
        reason = self._error or (wait.failed() if wait.failed else None)
        if reason:
            self._timer.stop()
            self._wait = None
            return self._fail(reason)
        if wait.until():
            self._timer.stop()
            self._wait = None
            QTimer.singleShot(0, self._next)
        elif time.monotonic() - self._wait_started > wait.timeout_s:
            self._timer.stop()
            self._wait = None
            self._fail(f"timed out after {wait.timeout_s:.0f} s waiting for {wait.what or 'it'}")

    def _finish(self) -> None:
        if self.screenshot is None:
            return self._end(0, "")
        QTimer.singleShot(self.settle_ms, self._save)

    def _save(self) -> None:
        try:
            save_screenshot(self.window, self.screenshot)
        except QdeskError as e:
            return self._end(2, str(e))
        self._end(0, "")

    def _fail(self, reason: str) -> None:
        self._end(2, f"{self._current()}: {reason}")

    def _end(self, code: int, message: str) -> None:
        if not self._done:
            self._done = True
            self._timer.stop()
            self.finished.emit(code, message)


def save_screenshot(window, path: Path) -> Path:
    """The whole window as a PNG (temporary name, then rename)."""
    from PySide6.QtWidgets import QApplication

    path = Path(path)
    if not path.parent.is_dir():
        raise BadInput(f"{path.parent}: no such folder for the screenshot")
    window.before_screenshot()
    # A page shown just now lays out in several rounds of posted events (each
    # nested splitter and tab widget resizes its children in turn); one round
    # left a page's inner splitter at its old size, wider than the window.
    for _ in range(5):
        QApplication.sendPostedEvents()
        QApplication.processEvents()
    pixmap = window.grab()
    tmp = path.with_name(f".{path.name}.partial.png")
    if not pixmap.save(str(tmp), "PNG"):
        tmp.unlink(missing_ok=True)
        raise BadInput(f"{path}: cannot write the screenshot")
    tmp.replace(path)
    return path
