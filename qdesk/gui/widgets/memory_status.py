"""The status bar's device and memory line, refreshed every two seconds."""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QEvent, QTimer
from PySide6.QtWidgets import QLabel

from qdesk.core.models import available_memory_bytes
from qdesk.gui.formatting import mib


def process_memory_bytes() -> int:
    """Resident memory of this process (Linux: /proc/self/statm; else the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return 0


class MemoryStatus(QLabel):
    def __init__(self, models, parent=None) -> None:
        super().__init__(parent)
        self.models = models
        self._timer = QTimer(self)
        self._timer.setInterval(2000)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        self.refresh()

    def device(self) -> str:
        devices = sorted({e.facts.device for e in self.models.ready()})
        return " + ".join(devices) if devices else "cpu"

    def refresh(self) -> None:
        device = self.device()
        text = self.tr("{device} · qdesk uses {used} · {free} free").format(
            device=device, used=mib(process_memory_bytes()), free=mib(available_memory_bytes("cpu")))
        if "cuda" in device:
            text += self.tr(" · GPU {free} free").format(free=mib(available_memory_bytes("cuda")))
        self.setText(text)

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.refresh()
        super().changeEvent(event)
