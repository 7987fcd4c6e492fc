"""Is the window responsive while it works? A 10 ms heartbeat timer on the GUI
thread while the app loads the demo model and runs a GPTQ quantization of it;
prints the longest and the 99th-percentile gap between heartbeats per phase
(target: longest under 100 ms on a 2-core CPU), and the quantize page's
predicted time against the measured one. Then, unless ``--no-chat``, it runs
the chat page's benchmark (``benchmarks/bench_chat_ui.py``: heartbeat while two
panes stream and a GPTQ job runs, GUI against CLI decode speed) on the
checkpoint it just made, so one command gives every UI responsiveness figure.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_ui.py [--samples 16 --tokens 256]

A gap is the time between two heartbeats minus nothing: 10 ms is the ideal.
Gaps come from the GUI thread's own work (events, plot redraws, garbage
collection) and from waiting for the GIL while a worker runs Python code.
``--switch-interval`` sets ``sys.setswitchinterval`` (Python's default 5 ms)
to compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Diagnosis:
    """Where the GUI thread's time went: garbage collections (any thread) and the
    GUI's own handlers (event delivery, plot redraws), each with its duration."""

    def __init__(self) -> None:
        import gc
        import threading

        self.main = threading.main_thread()
        self.spans: list[tuple[float, float, str]] = []  # (start, seconds, what)
        self._gc_start: float | None = None
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        import threading

        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start is not None:
            where = "GUI" if threading.current_thread() is self.main else "worker"
            self.spans.append((self._gc_start, time.perf_counter() - self._gc_start,
                               f"gc gen {info['generation']} ({where} thread)"))

    def wrap(self, obj, name: str, what: str) -> None:
        original = getattr(obj, name)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.spans.append((t, time.perf_counter() - t, what))

        setattr(obj, name, timed)

    def explain(self, start: float, end: float) -> str:
        inside = [(d, w) for s, d, w in self.spans + EVENT_SPANS
                  if s < end and s + d > start and d > 0.005]
        if not inside:
            return "waiting (GIL or CPU)"
        return ", ".join(f"{w} {d * 1000:.0f} ms" for d, w in sorted(inside, reverse=True)[:3])


class Heartbeat:
    """Records the gaps between the firings of a 10 ms timer, per phase."""

    def __init__(self, interval_ms: int = 10) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)
        self.phase = "idle"
        self.gaps: dict[str, list[float]] = {}
        self.long: list[tuple[str, float, float, str]] = []  # (phase, start, ms, worker) over 50 ms
        self.sample_workers = False
        self._last = None

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def _beat(self) -> None:
        now = time.perf_counter()
        gap = (now - self._last) * 1000
        self.gaps.setdefault(self.phase, []).append(gap)
        if gap > 50:
            self.long.append((self.phase, self._last, gap,
                              worker_stacks() if self.sample_workers else ""))
        self._last = now


EVENT_SPANS: list[tuple[float, float, str]] = []  # (start, seconds, what) of slow Qt events


def timed_application():
    """A QApplication that times each event it delivers (for ``--diagnose``):
    painting and layout happen in Qt's events, outside the wrapped handlers."""
    from PySide6.QtWidgets import QApplication

    class TimedApplication(QApplication):
        def notify(self, receiver, event):
            t = time.perf_counter()
            try:
                return super().notify(receiver, event)
            finally:
                d = time.perf_counter() - t
                if d > 0.02:
                    EVENT_SPANS.append((t, d, f"{type(receiver).__name__} {event.type().name}"))

    return TimedApplication(sys.argv[:1])


def worker_stacks() -> str:
    """Where the other threads are now: right after a long wait for the GIL, the
    thread that held it has just let it go, so its stack names the culprit."""
    import threading
    import traceback

    main = threading.main_thread().ident
    out = []
    for ident, frame in sys._current_frames().items():
        if ident == main:
            continue
        frames = [f for f in traceback.extract_stack(frame)
                  if "site-packages/superqt" not in f.filename and "threading.py" not in f.filename]
        ours = [f for f in frames if "/qdesk/" in f.filename] or frames
        top = frames[-1] if frames else None
        if top is None:
            continue
        where = f"{Path(top.filename).name}:{top.lineno} {top.name}"
        if ours and ours[-1] is not top:
            where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name} > " + where
        out.append(where)
    return " | ".join(out[:2])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--method", default="gptq")
    p.add_argument("--diagnose", action="store_true",
                   help="say what the GUI thread did during the gaps over 50 ms")
    p.add_argument("--worker-nice", type=int, default=None,
                   help="the job threads' nice value (default: qdesk.gui.jobs.WORKER_NICE)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval in milliseconds (default: Python's 5 ms)")
    p.add_argument("--no-chat", action="store_true",
                   help="skip the chat page's benchmark (bench_chat_ui.py) afterwards")
    p.add_argument("--chat-runs", type=int, default=3,
                   help="GUI/CLI decode runs of the chat benchmark (its --runs)")
    args = p.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval / 1000)

    from qdesk.app import make_application
    from qdesk.cli.common import quiet_libraries
    from qdesk.gui import jobs

    if args.worker_nice is not None:
        jobs.WORKER_NICE = args.worker_nice
    from qdesk.core.threads import configure_openmp

    quiet_libraries()

    configure_openmp()
    if args.diagnose:
        timed_application()  # make_application then reuses it
    app = make_application()
    from qdesk.app import prepare_libraries

    t = time.perf_counter()
    prepare_libraries(["demo"])  # as the app does before its window opens on the demo
    warmup = time.perf_counter() - t
    from qdesk.gui.garbage import GuiGarbageCollector
    from qdesk.gui.main_window import MainWindow
    from qdesk.gui.quantize_request import QuantizeOptions

    collector = GuiGarbageCollector()  # as the app does
    os.environ.setdefault("QDESK_SETTINGS_DIR", tempfile.mkdtemp(prefix="qdesk-bench-ui-"))
    window = MainWindow()
    collector.attach(window)
    window.runner.show_dialogs = False
    errors = []
    window.runner.error_shown.connect(lambda t, m: errors.append(m))
    window.resize(1280, 800)
    window.show()
    page = window.page("quantize")
    out = Path(tempfile.mkdtemp(prefix="qdesk-bench-ui-out-")) / "demo-q"
    beat = Heartbeat()
    diagnosis = Diagnosis() if args.diagnose else None
    beat.sample_workers = args.diagnose
    if diagnosis is not None:
        from qdesk.gui import jobs

        diagnosis.wrap(jobs.Job, "_drain", "delivering events")
        diagnosis.wrap(page, "flush", "quantize page redraw")
        diagnosis.wrap(window.memory_status, "refresh", "memory line")
    state = {"phase": "load", "t": {}, "predicted": None}

    def step() -> None:
        if errors:
            app.quit()
            return
        phase = state["phase"]
        entry = window.models.selected()
        if phase == "load" and entry is not None and entry.state == "ready" and page.shapes():
            state["t"]["load"] = time.perf_counter() - state["t0"]
            options = QuantizeOptions(method=args.method, bits=4, group_size=64,
                                      calib_samples=args.samples, calib_tokens=args.tokens,
                                      output=str(out))
            page.form.set_options(options)
            state["predicted"] = page.predicted()
            state["phase"] = "quantize"
            beat.set_phase("quantize")
            state["t0"] = time.perf_counter()
            page.run_action()
        elif phase == "quantize" and page.job is None:
            state["t"]["quantize"] = time.perf_counter() - state["t0"]
            state["phase"] = "after"
            beat.set_phase("reload")  # the source reloads and the new checkpoint opens
            state["t0"] = time.perf_counter()
        elif phase == "after" and window.runner.is_idle():
            state["t"]["reload"] = time.perf_counter() - state["t0"]
            app.quit()

    from PySide6.QtCore import QTimer

    poll = QTimer()
    poll.timeout.connect(step)
    poll.start(50)
    load = os.cpu_count(), open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else "?"
    t = time.perf_counter()
    for _ in range(3):  # the window's first layout and paint, before the user can ask for anything
        app.processEvents()
    first_paint = time.perf_counter() - t
    beat.set_phase("load")
    beat.start()
    state["t0"] = time.perf_counter()
    window.sidebar.request_load("demo")
    app.exec()
    beat.timer.stop()
    if errors:
        print("failed:", errors[0], file=sys.stderr)
        return 1
    print(f"cores {load[0]}, load average before {' '.join(load[1])}, "
          f"switch interval {sys.getswitchinterval() * 1000:.1f} ms, worker nice {jobs.WORKER_NICE}, "
          f"{args.method} 4-bit g64 on {args.samples} x {args.tokens} calibration tokens; "
          f"libraries imported before the window in {warmup:.1f} s, first paint {first_paint * 1000:.0f} ms")
    print(f"{'phase':<10} {'seconds':>8} {'beats':>7} {'p50 ms':>8} {'p99 ms':>8} {'longest ms':>11}")
    for phase in ("load", "quantize", "reload"):
        gaps = beat.gaps.get(phase, [])
        if not gaps:
            continue
        print(f"{phase:<10} {state['t'].get(phase, 0):8.1f} {len(gaps):7d} "
              f"{percentile(gaps, 50):8.1f} {percentile(gaps, 99):8.1f} {max(gaps):11.1f}")
    both = beat.gaps.get("load", []) + beat.gaps.get("quantize", [])
    print(f"load + quantize: p99 {percentile(both, 99):.1f} ms, longest {max(both):.1f} ms")
    if diagnosis is not None:
        print("gaps over 50 ms and what the GUI thread did meanwhile:")
        for phase, start, ms, workers in sorted(beat.long, key=lambda g: -g[2])[:25]:
            print(f"  {phase:<9} {ms:6.0f} ms  {diagnosis.explain(start, start + ms / 1000)}"
                  f"  [worker: {workers}]")
    predicted = state["predicted"]
    if predicted is not None and "quantize" in state["t"]:
        print(f"predicted quantize time {predicted.seconds:.0f} s, measured {state['t']['quantize']:.0f} s "
              f"(ratio {state['t']['quantize'] / predicted.seconds:.2f}); predicted "
              f"{predicted.bits_per_weight:.3f} bpw, job {page.summary.bits_per_weight:.3f}")
    window.close()
    if args.no_chat:
        return 0
    # The chat page's benchmark in its own process (its own window and threads),
    # on the 4-bit checkpoint this run just wrote.
    print("\nchat page (benchmarks/bench_chat_ui.py):", flush=True)
    import subprocess

    chat = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_chat_ui.py")),
                           "--checkpoint", str(out), "--runs", str(args.chat_runs)])
    return chat.returncode


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Skip the interpreter's teardown: triton's bindings (imported with qdesk's
    # kernels) print reference-leak reports there, which are not this benchmark's.
    os._exit(code)
