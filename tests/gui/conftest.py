"""GUI tests: garbage is collected on the GUI thread, and no worker outlives a test.

Python's cyclic collector runs in whichever thread allocates when a threshold
is crossed; if that is a worker thread and the garbage holds Qt objects from an
earlier test, Qt crashes. The app avoids this with pyqtgraph's
GarbageCollector (qdesk/app.py); the tests do the same by hand.
"""

import gc

import pytest
from PySide6.QtCore import QThreadPool


@pytest.fixture(autouse=True)
def gui_thread_garbage_collection(qapp):
    gc.collect()
    gc.disable()
    yield
    pool = QThreadPool.globalInstance()
    assert pool.waitForDone(120_000), "a worker was still running after the test"
    qapp.processEvents()
    gc.collect()
    gc.enable()
