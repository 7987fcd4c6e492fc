"""The one job runner: every long task of the GUI goes through it.

Contract (for every page)
-------------------------
A *job* is a core generator run in a superqt worker thread. Its yields are the
progress ticks and the cancel points; its return value is the result::

    job = context.runner.start(
        lambda: self.tr("Quantizing {name}").format(name=entry.name),  # or a plain str
        lambda: quantize_steps(loaded, config, plan, calibration, output_dir=out),
        models=(entry.key,),        # refused while another job uses one of them
        on_event=self._on_event,    # GUI thread, in order, each typed core event
        on_done=self._on_done,      # GUI thread, the generator's return value
        on_failed=self._on_failed,  # GUI thread, the one-line reason (after the dialog)
        on_cancelled=self._on_cancelled,
        throttle_ms=0,              # > 0 batches a fast stream (tokens) to one delivery per interval
    )
    if job is None:                 # refused (a model is busy): the user was told why
        return
    job.set_status(text, done, total)  # what the status bar shows for it
    job.cancel()                        # the generator is closed at its next yield

A core function that reports through a progress callback instead of yielding
(``open_model(ref, progress=...)``) runs with ``start_call(title, fn, ...)``:
``fn(report)`` gets a ``report(event)`` callable that delivers ``event`` like a
yield and raises ``Cancelled`` once the job is cancelled.

What the runner guarantees:

- ``on_event``/``on_done``/``on_failed``/``on_cancelled`` run on the GUI thread;
  a widget is never touched from the worker. Events arrive in the order they
  were yielded and all of them before ``on_done``.
- Cancel closes the generator *in the worker thread* at its next yield
  (``GeneratorExit`` there: core jobs restore what they changed and write
  nothing). superqt's own ``quit()`` only stops asking for values, so the
  runner closes the generator itself.
- An exception becomes one dialog with the reason: a ``QdeskError``'s message is
  its one line; anything else gets a short line naming the job and the error's
  type and first line, never a traceback (that goes to the log). ``Cancelled``
  is not an error. ``error_shown(title, message)`` is emitted with it (the
  screenshot script fails on it; tests read it).
- Two jobs never share a model: ``start`` returns ``None`` and says which job
  holds the model. A short job that only *reads* a model and changes nothing
  (the quantize page measuring its shapes) passes no ``models``: holding one
  would refuse the job the user starts next on that model ("busy" right after
  a load).
- ``cancel_all()`` then ``idle`` (signal) / ``is_idle()``: the main window uses
  them to close cleanly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QWidget
from superqt.utils import GeneratorWorker

from qdesk.core.errors import Cancelled, OutOfResources, QdeskError, is_disk_full

log = logging.getLogger(__name__)

_CANCELLED = object()  # the worker's result when the job was cancelled


def error_text(error: BaseException, title: str = "") -> str:
    """The one line a user sees for ``error``."""
    if isinstance(error, QdeskError):
        text = str(error).strip().splitlines()
        return text[0] if text else type(error).__name__
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return OutOfResources("out of memory").args[0] + (f" ({title})" if title else "")
    if is_disk_full(error):  # a library's own error (safetensors, tokenizers): one plain line
        where = getattr(error, "filename", None)
        return f"disk full{f' writing {where}' if where else ''}" + (f" ({title})" if title else "")
    first = (str(error).strip().splitlines() or [""])[0]
    if len(first) > 200:
        first = first[:200] + "…"
    what = f"{title}: " if title else ""
    return f"{what}{type(error).__name__}{': ' + first if first else ''}"


WORKER_NICE = 5  # see lower_thread_priority


def lower_thread_priority() -> None:
    """Give the calling worker thread a lower CPU priority than the GUI thread.

    On a 2-core machine a job's threads (and the OpenMP threads torch starts
    from them, which inherit the value) keep both cores busy; the GUI thread
    then waits for a core on every timer tick. A nice value of 5 lets it win
    the core when it wakes up, and costs the job little (the GUI thread needs
    a few percent). Linux sets it per thread; elsewhere this does nothing.
    Pool threads are reused, and every job runs at this priority.
    """
    import os

    if not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < WORKER_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, WORKER_NICE)
    except OSError:
        pass


class _JobWorker(GeneratorWorker):
    """A superqt generator worker that closes its generator when cancelled and
    hands each yield to its job's queue instead of one signal per event."""

    def __init__(self, steps: Callable[[], Iterator], job: Job) -> None:
        def run():
            return (yield from steps())

        super().__init__(run)
        self._job = job

    def work(self):
        lower_thread_priority()
        gen = self._gen
        while True:
            if self.abort_requested:
                gen.close()  # GeneratorExit at the job's yield, in this thread
                return _CANCELLED
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            self._job._push(event)


class Job(QObject):
    """One running job. Signals reach the GUI thread; ``status`` is for the status bar."""

    status_changed = Signal()
    finished = Signal()  # after done, failed or cancelled
    _ready = Signal()  # from the worker: events are waiting in the queue

    def __init__(self, runner: JobRunner, title: str | Callable[[], str], models: Sequence[str],
                 throttle_ms: int) -> None:
        super().__init__(runner)
        self._title = title
        self.models = tuple(models)
        self.throttle_ms = throttle_ms
        self.started_at = time.monotonic()
        self.status = ""
        self.done_count = 0
        self.total_count = 0
        self.outcome = ""  # "" while running, then "done" | "failed" | "cancelled"
        self.cancel_requested = False
        self._cancel_event = threading.Event()
        self._queue: deque = deque()
        self._pending = False
        self._last_drain = 0.0
        self._handlers: dict[str, Callable | None] = {}
        self._worker: _JobWorker | None = None
        self._ready.connect(self._drain)

    # -- for pages ---------------------------------------------------------------
    def cancel(self) -> None:
        """Stop at the next yield (or the next ``report`` of a ``start_call`` job)."""
        if self.outcome or self.cancel_requested:
            return
        self.cancel_requested = True
        self._cancel_event.set()
        if self._worker is not None:
            self._worker.quit()
        self.set_status(self.tr("cancelling…"), self.done_count, self.total_count)

    @property
    def title(self) -> str:
        """The job's name; a page that passes a function gets it in the current
        language (a long job outlives a language switch)."""
        return self._title() if callable(self._title) else self._title

    def set_status(self, text: str, done: int = 0, total: int = 0) -> None:
        self.status, self.done_count, self.total_count = text, done, total
        self.status_changed.emit()

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the job is cancelled, for core loops that poll an Event."""
        return self._cancel_event

    def report(self, event) -> None:
        """For ``start_call`` functions (worker thread): deliver ``event``, or raise
        ``Cancelled`` when the job was cancelled."""
        if self._cancel_event.is_set():
            raise Cancelled("cancelled")
        self._push(event)

    # -- delivery -----------------------------------------------------------------
    def _push(self, event) -> None:  # worker thread
        self._queue.append(event)
        if not self._pending:
            self._pending = True
            self._ready.emit()

    def _drain(self, force: bool = False) -> None:  # GUI thread
        if not force and self.throttle_ms:
            wait = self._last_drain + self.throttle_ms / 1000 - time.monotonic()
            if wait > 0:
                QTimer.singleShot(int(wait * 1000) + 1, self._drain)
                return
        self._pending = False
        self._last_drain = time.monotonic()
        on_event = self._handlers.get("event")
        while self._queue:
            event = self._queue.popleft()
            if on_event is not None and not self.outcome:
                try:
                    on_event(event)
                except Exception:  # a page's bug must not kill the job's bookkeeping
                    log.exception("%s: the page failed on an event", self.title)

    def _on_returned(self, value) -> None:
        self.parent()._returned(self, value)

    def _on_errored(self, error) -> None:
        self.parent()._errored(self, error)

    def _on_finished(self) -> None:
        self.parent()._ended(self)

    def _finish(self, outcome: str, value=None) -> None:
        if self.outcome:
            return
        self._drain(force=True)
        self.outcome = outcome
        handler = self._handlers.get(outcome)
        try:
            if handler is not None:
                handler(value) if outcome != "cancelled" else handler()
        except Exception:  # a page's bug: logged, and the runner's bookkeeping goes on
            log.exception("%s: the page failed on its %s", self.title, outcome)
        finally:
            self.finished.emit()


class JobRunner(QObject):
    """Starts jobs, refuses two on one model, reports errors once, cancels all."""

    job_started = Signal(object)  # Job
    job_finished = Signal(object)  # Job
    error_shown = Signal(str, str)  # title, message
    idle = Signal()  # the last running job ended

    def __init__(self, parent_widget: QWidget | None = None) -> None:
        super().__init__(parent_widget)
        self._parent_widget = parent_widget
        self.jobs: list[Job] = []
        self.show_dialogs = True  # the screenshot script turns dialogs into failures
        self._dialogs: list[QMessageBox] = []
        self.model_name: Callable[[str], str] = lambda key: key  # set by the app context
        # A job's thread ends with the job (Qt keeps idle pool threads 30 s): a
        # thread that computed keeps an OpenMP team while it lives, and a second
        # team in the process throttles every other (qdesk.core.threads; the
        # chat decoded 0.6x as fast behind one).
        QThreadPool.globalInstance().setExpiryTimeout(0)

    def busy_job(self, model_key: str) -> Job | None:
        return next((j for j in self.jobs if model_key in j.models), None)

    def is_idle(self) -> bool:
        return not self.jobs

    def start(
        self,
        title: str | Callable[[], str],
        steps: Callable[[], Iterator],
        *,
        models: Sequence[str] = (),
        on_event: Callable | None = None,
        on_done: Callable | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        throttle_ms: int = 0,
        refuse_quietly: bool = False,
    ) -> Job | None:
        """Run the generator ``steps()`` in a worker; ``None`` if a model is busy."""
        return self._start(title, lambda job: steps(), models, on_event, on_done, on_failed,
                           on_cancelled, throttle_ms, refuse_quietly)

    def start_call(
        self,
        title: str | Callable[[], str],
        fn: Callable,
        *,
        models: Sequence[str] = (),
        on_event: Callable | None = None,
        on_done: Callable | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        throttle_ms: int = 0,
        refuse_quietly: bool = False,
    ) -> Job | None:
        """Run ``fn(report)`` (a function, not a generator) as a job; see the module doc."""

        def steps(job: Job):
            return fn(job.report)
            yield  # a generator function: its body runs in the worker

        return self._start(title, steps, models, on_event, on_done, on_failed, on_cancelled,
                           throttle_ms, refuse_quietly)

    def _start(self, title, make_steps, models, on_event, on_done, on_failed, on_cancelled,
               throttle_ms, refuse_quietly) -> Job | None:
        for key in models:
            holder = self.busy_job(key)
            if holder is not None:
                if not refuse_quietly:
                    self.show_error(
                        self.tr("Busy"),
                        self.tr("{model} is in use by “{job}”. Wait for it to finish "
                                "or cancel it first.").format(model=self.model_name(key),
                                                           job=holder.title),
                    )
                return None
        job = Job(self, title, models, throttle_ms)
        job._handlers = {"event": on_event, "done": on_done, "failed": on_failed,
                         "cancelled": on_cancelled}
        worker = _JobWorker(lambda: make_steps(job), job)
        job._worker = worker
        # Bound methods of a QObject living in the GUI thread: the calls are queued
        # there (a plain lambda could run in the worker thread).
        worker.returned.connect(job._on_returned)
        worker.errored.connect(job._on_errored)
        worker.finished.connect(job._on_finished)
        self.jobs.append(job)
        self.job_started.emit(job)
        worker.start()
        return job

    def cancel_all(self) -> None:
        for job in list(self.jobs):
            job.cancel()

    def show_error(self, title: str, message: str) -> None:
        """One dialog (non-blocking) with the reason."""
        log.info("%s: %s", title, message)
        self.error_shown.emit(title, message)
        if not self.show_dialogs:
            return
        box = QMessageBox(QMessageBox.Icon.Critical, title, message,
                          QMessageBox.StandardButton.Ok, self._parent_widget)
        box.setObjectName("qdesk-error")
        # Held until closed: a dialog without a parent would be freed at once.
        self._dialogs.append(box)
        box.finished.connect(lambda _result: self._dialogs.remove(box) if box in self._dialogs else None)
        box.open()

    # -- worker callbacks (GUI thread) ----------------------------------------------
    def _release(self, job: Job) -> None:
        """The job's work is over: its models are free for the next job (which its
        handlers may start at once)."""
        if job in self.jobs:
            self.jobs.remove(job)

    def _returned(self, job: Job, value) -> None:
        self._release(job)
        if value is _CANCELLED or job.cancel_requested:
            job._finish("cancelled")
        else:
            job._finish("done", value)

    def _errored(self, job: Job, error: BaseException) -> None:
        self._release(job)
        if isinstance(error, Cancelled) or job.cancel_requested and isinstance(error, GeneratorExit):
            job._finish("cancelled")
            return
        # The traceback is for developers (qdesk -v); the user gets the one line.
        log.debug("%s failed", job.title, exc_info=(type(error), error, error.__traceback__))
        message = error_text(error, job.title)
        self.show_error(job.title, message)
        job._finish("failed", message)

    def _ended(self, job: Job) -> None:
        self._release(job)
        if not job.outcome:  # aborted before it returned anything
            job._finish("cancelled")
        if job._worker is not None:  # no reference cycle through the worker thread
            job._worker._job = None
            job._worker = None
        self.job_finished.emit(job)
        job.setParent(None)  # owned by whoever still holds it (a page), then freed
        if not self.jobs:
            self.idle.emit()
