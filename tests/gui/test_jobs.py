"""The job runner: events in order on the GUI thread, one dialog per error (never
a traceback), cancel closes the generator in its worker at the next yield, two
jobs never share a model, fast streams are batched."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication, QMessageBox

from qdesk.core.errors import BadInput
from qdesk.gui.jobs import JobRunner, error_text


@pytest.fixture
def runner(qtbot):
    r = JobRunner(None)
    r.show_dialogs = False
    r.errors = []
    r.error_shown.connect(lambda title, message: r.errors.append((title, message)))
    yield r
    r.cancel_all()
    qtbot.waitUntil(r.is_idle, timeout=30_000)


def _wait(qtbot, job):
    qtbot.waitUntil(lambda: job.outcome != "", timeout=30_000)


def test_events_arrive_in_order_on_the_gui_thread_then_the_result(runner, qtbot):
    seen, threads, done = [], [], []

    def steps():
        yield from range(50)
        return "result"

    def on_event(e):
        seen.append(e)
        threads.append(QThread.currentThread())

    job = runner.start("count", steps, on_event=on_event, on_done=lambda v: done.append((v, list(seen))))
    _wait(qtbot, job)
    assert job.outcome == "done"
    assert done == [("result", list(range(50)))]  # every event before the result
    assert all(t is QApplication.instance().thread() for t in threads)
    assert runner.errors == []


def test_cancel_closes_the_generator_in_the_worker_at_the_next_yield(runner, qtbot):
    state = {"yields": 0, "closed_in": None, "main": threading.current_thread()}
    gate = threading.Event()

    def steps():
        try:
            while True:
                state["yields"] += 1
                yield state["yields"]
                gate.wait(5)  # one "layer" of work between yields
        finally:
            state["closed_in"] = threading.current_thread()

    cancelled = []
    job = runner.start("forever", steps, on_cancelled=lambda: cancelled.append(True))
    qtbot.waitUntil(lambda: state["yields"] >= 1, timeout=10_000)
    job.cancel()
    gate.set()
    _wait(qtbot, job)
    assert job.outcome == "cancelled" and cancelled == [True]
    assert state["closed_in"] is not None and state["closed_in"] is not state["main"]
    assert state["yields"] <= 2  # stopped at the next yield
    assert runner.errors == []


@pytest.mark.parametrize("error, expected", [
    (BadInput("demo: no such revision on the Hugging Face hub"),
     "demo: no such revision on the Hugging Face hub"),
    (ValueError("boom\nline two of a long story"), "broken job: ValueError: boom"),
    (MemoryError(), "out of memory (broken job)"),
])
def test_an_error_is_one_dialog_with_the_reason(runner, qtbot, error, expected):
    def steps():
        yield 1
        raise error

    failed = []
    runner.show_dialogs = True
    job = runner.start("broken job", steps, on_failed=failed.append)
    _wait(qtbot, job)
    assert job.outcome == "failed"
    assert failed == [expected]
    assert runner.errors == [("broken job", expected)]
    boxes = [w for w in QApplication.topLevelWidgets()
             if isinstance(w, QMessageBox) and w.objectName() == "qdesk-error" and w.isVisible()]
    assert len(boxes) == 1 and boxes[0].text() == expected
    assert "Traceback" not in boxes[0].text()
    boxes[0].close()


def test_error_text_is_one_short_line():
    assert error_text(RuntimeError("x" * 500), "job").endswith("…")
    assert "\n" not in error_text(RuntimeError("a\nb"), "job")


def test_two_jobs_on_one_model_are_refused(runner, qtbot):
    gate = threading.Event()

    def steps():
        yield 0
        gate.wait(10)

    first = runner.start("Quantizing demo", steps, models=("demo",))
    assert first is not None
    second = runner.start("Chatting with demo", lambda: iter([1]), models=("demo",))
    assert second is None
    assert len(runner.errors) == 1
    assert "Quantizing demo" in runner.errors[0][1] and "demo" in runner.errors[0][1]
    other = runner.start("other model", lambda: iter([1]), models=("other",))
    assert other is not None
    gate.set()
    _wait(qtbot, first)
    _wait(qtbot, other)
    again = runner.start("Chatting with demo", lambda: iter([1]), models=("demo",))
    assert again is not None  # free once the first ended
    _wait(qtbot, again)


def test_a_fast_stream_is_batched_but_complete(runner, qtbot):
    seen = []
    drains = []

    def steps():
        yield from range(20_000)

    job = runner.start("tokens", steps, on_event=seen.append, throttle_ms=40)
    original = job._drain
    job._drain = lambda force=False: (drains.append(time.monotonic()), original(force))[1]
    _wait(qtbot, job)
    assert seen == list(range(20_000))
    assert len(drains) < 2000  # far fewer deliveries than events


def test_a_call_job_reports_and_cancels(runner, qtbot):
    seen = []
    started = threading.Event()

    def work(report):
        report("first")
        started.set()
        for _ in range(500):
            time.sleep(0.01)
            report("tick")  # raises Cancelled once the job is cancelled
        return "never"

    cancelled = []
    job = runner.start_call("load", work, on_event=seen.append,
                            on_cancelled=lambda: cancelled.append(True))
    assert started.wait(10)
    job.cancel()
    _wait(qtbot, job)
    assert job.outcome == "cancelled" and cancelled == [True]
    assert seen[0] == "first"
    assert runner.errors == []


def test_a_title_given_as_a_function_follows_the_language(runner, qtbot):
    language = {"now": "Quantizing demo"}
    job = runner.start(lambda: language["now"], lambda: iter(range(3)))
    assert job.title == "Quantizing demo"
    language["now"] = "正在量化 demo"  # what the page's tr() returns after a switch
    assert job.title == "正在量化 demo"
    _wait(qtbot, job)
    assert job.outcome == "done"


def test_a_jobs_thread_ends_with_the_job(runner, qtbot):
    """A thread that computed keeps an OpenMP team while it lives, and a second
    team throttles every other (qdesk.core.threads): job threads do not idle."""
    import os

    ids = []

    def steps():
        ids.append(threading.get_native_id())
        yield 1

    job = runner.start("one", steps)
    _wait(qtbot, job)
    qtbot.waitUntil(lambda: not os.path.exists(f"/proc/self/task/{ids[0]}"), timeout=5_000)
