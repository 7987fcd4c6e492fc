"""Python's cyclic garbage collector, run on the GUI thread and kept short.

Why on the GUI thread: a collection in a worker thread may delete Qt objects
there, which crashes Qt; so automatic collection is off and a timer collects
(as pyqtgraph's GarbageCollector does). Why more than that: with automatic
collection off, everything a worker allocates piles up in the youngest
generation. Loading the demo model leaves about 630,000 tracked objects there
(torch and transformers imported, the model built), and collecting them took
0.42 s for generation 0, then 0.37 s each again when they reached generations 1
and 2 (measured on the 2-core machine): three freezes of the window.

So: while a job runs and the youngest generation is large, collections wait,
and the oldest generation is collected only when no job runs;
when a model has finished loading, everything alive is frozen (``gc.freeze``:
kept out of every later collection, which then stay small); when a model is
closed and its weights are still alive (held by a reference cycle), the frozen
objects are thawed and collected once, and the rest is frozen again. That
collection traverses everything the app holds (0.4 s with the demo loaded, 0.7 s
after a quantization, measured on the 2-core machine), so it runs only when it
has something to free: the demo model, closed, was freed by reference counting
alone (a full collection after it found 10 objects), so reloading a model after
a quantization no longer freezes the window.
"""

from __future__ import annotations

import gc
import logging
import time

from PySide6.QtCore import QObject, QTimer

log = logging.getLogger(__name__)

LARGE = 20_000  # young objects a collection may traverse while a job runs


class GuiGarbageCollector(QObject):
    def __init__(self, busy=lambda: False, interval_ms: int = 250, parent=None) -> None:
        super().__init__(parent)
        self.busy = busy  # True while jobs run
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        l0, l1, l2 = gc.get_count()
        busy = self.busy()
        if l0 <= self.threshold[0] or (l0 > LARGE and busy):
            return
        gc.collect(0)
        if l1 > self.threshold[1]:
            gc.collect(1)
            # The oldest generation holds everything since the last freeze: collected
            # only when no job runs (0.35 s once, measured, after a run's imports),
            # and what survives it is frozen.
            if l2 > self.threshold[2] and not busy:
                gc.collect(2)
                gc.freeze()

    def settle(self, *_args) -> None:
        """A model finished loading: what is alive now stays (frozen)."""
        gc.freeze()

    def release(self, held=None) -> None:
        """A model was closed. ``held`` is a weak reference to what held its weights:
        if it died with the model's last reference, nothing is left for a
        collection to free; otherwise its cycles are collected (one full
        collection) and the rest is frozen again."""
        if held is not None and held() is None:
            return
        t = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        log.debug("released a model: full collection %.0f ms", (time.perf_counter() - t) * 1000)

    def attach(self, window) -> None:
        """Follow a main window's models and jobs."""
        self.busy = lambda: not window.runner.is_idle()
        window.models.loaded.connect(self.settle)
        window.models.released.connect(lambda held: QTimer.singleShot(0, lambda: self.release(held)))
