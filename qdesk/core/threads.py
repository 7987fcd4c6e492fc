"""How many threads torch and llama.cpp compute with, and how their threads wait.

What this rests on (read in the libraries, checked on this machine):

- One OpenMP runtime serves torch and llama.cpp. torch's wheel bundles a
  ``libgomp.so.1``, llama.cpp links the system's ``libgomp.so.1``; the same
  soname, so whichever loads first serves both. (sentencepiece's wheel brings
  a renamed copy, ``libgomp-<hash>.so``, for itself alone.)
  Its wait policy (``OMP_WAIT_POLICY``) is read once, when it loads: it cannot
  differ per library or per model, only per process.
- llama.cpp's CPU backend, built with OpenMP (the default, and qdesk's build),
  runs each graph in ``#pragma omp parallel`` and ends every op with ``#pragma
  omp barrier`` (ggml-cpu.c: ``ggml_graph_compute``, ``ggml_barrier``): its
  threadpool's own polling settings apply only to builds without OpenMP.
  Under ``OMP_WAIT_POLICY=PASSIVE`` each of those barriers sleeps in the kernel
  and is woken: the demo's decode ran 3.3-3.6x slower (issue 13: 43 against
  142 tok/s). libgomp's default (the variable unset) spins briefly, then
  sleeps, and cuts the spin to 100 iterations whenever it manages more threads
  than there are CPUs; that is what qdesk now leaves in place.
- What made spinning costly was never the spinning itself but teams wider than
  the free cores: a two-thread team with one core busy elsewhere waits at every
  barrier for its descheduled member (llama.cpp at 2 threads fell to ~55 tok/s
  with one core busy, 1 thread kept ~140).

- libgomp keeps one thread team (a pool) per thread that ever ran a parallel
  region with more than one thread, until that thread exits, and counts every
  pool thread it manages. While it manages more threads than there are CPUs it
  cuts every wait to 100 spins (``gomp_throttled_spin_count_var``; 1000 under
  ACTIVE), which is PASSIVE in all but name. So a second thread that owns a
  team slows every team in the process: on the 2-core machine the demo decoded
  at 15-17 tok/s in a worker thread once the main thread had computed with two
  threads, and at 23-28 tok/s in the main thread or in a worker beside a main
  thread that never had (``keep_openmp_off_this_thread``). The window's
  thread therefore never computes in parallel, and threads that compute for a
  job end with it (the GUI's job threads, the live scorers' threads): their
  teams go with them.

So the policy is about thread counts. Every compute stream (a thread that
runs model forwards: the chat panes, interleaved in one thread; a scorer
stepping in its own thread; a quantization job) registers while it computes
(``compute_stream``), and the cores are shared out: the CPUs other processes
leave free, divided among the streams active now (``plan_threads``). Other
threads of qdesk's own process are not counted as load: the window's thread
paints for a few percent of a core, and a stream that waits for the GIL while
the window paints leaves its idle team member spinning, which a machine-wide
reading took for another program's load (measured: the chat page's worker then
dropped to one thread for one decode step in eight, and the GUI's tokens/s
fell 10% behind the same chat pinned to two threads). Other processes are
measured: the machine's busy CPU seconds (``/proc/stat``) less this process's,
over the last half second. The backends call ``threads_for_this_stream``
before each forward (cheap: a clock read and a dict; ``/proc/stat`` at most
every half second) and resize llama.cpp's context (``llama_set_n_threads``) or
torch's pool (``torch.set_num_threads``, which is process-wide) when the
answer changes. ``QDESK_THREADS=N`` pins every pool to N threads instead.
``benchmarks/bench_chat.py`` measures the policy against PASSIVE and ACTIVE in
each situation.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

WINDOW_SECONDS = 0.5  # how often the machine's load is read again
# A stream that computed this recently still counts: the gap between two
# forwards of a decode loop (sampling, statistics) is a few milliseconds; a
# scorer's catch-up prefill in a worker thread must not halve the pane's
# threads for long after it ends.
ACTIVE_SECONDS = 0.1
MARGIN = 0.3  # a core counts as free while others use less than 0.7 of it (see plan_threads)


def configure_openmp() -> None:
    """Call before torch or llama.cpp load. The wait policy stays libgomp's default
    (or the user's own ``OMP_WAIT_POLICY``): no process-wide switch. An
    ``OMP_NUM_THREADS`` the user set is kept as the pin (``QDESK_THREADS``)."""
    user = os.environ.get("OMP_NUM_THREADS")
    if user and user.isdigit() and "QDESK_THREADS" not in os.environ:
        os.environ["QDESK_THREADS"] = user


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def pinned_threads() -> int | None:
    """``QDESK_THREADS`` as a positive integer, or None (adaptive)."""
    value = os.environ.get("QDESK_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def plan_threads(cpus: int, others_busy: float, streams: int = 1) -> int:
    """Threads for one of ``streams`` active compute streams: an equal share of
    the cores other processes leave free, at least one.

    A core other processes use for less than 1 - MARGIN of the time counts as
    free: a team that shares a core briefly loses little, one whose member is
    descheduled at every barrier loses most of its speed (see the module
    docstring)."""
    free = cpus - max(0.0, others_busy)
    return max(1, min(cpus, int(free / max(1, streams) + MARGIN)))


def machine_busy_seconds() -> float | None:
    """CPU seconds every CPU has spent busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def process_busy_seconds() -> float:
    """CPU seconds this process's threads have spent (all of them)."""
    t = os.times()
    return t.user + t.system


@dataclass
class _Sample:
    wall: float
    machine: float
    own: float


class ExternalLoad:
    """The cores other processes keep busy, over the last window.

    ``read`` supplies (wall seconds, machine busy CPU seconds, this process's CPU
    seconds); tests pass their own."""

    def __init__(self, read=None) -> None:
        self.read = read or (lambda: (time.monotonic(), machine_busy_seconds(),
                                      process_busy_seconds()))
        self.last: _Sample | None = None
        self.busy = 0.0
        self.lock = threading.Lock()

    def update(self) -> float:
        """Other processes' busy cores, refreshed when a window has passed."""
        with self.lock:
            wall, machine, own = self.read()
            if machine is None:
                return self.busy
            if self.last is None:
                self.last = _Sample(wall, machine, own)
                return self.busy
            span = wall - self.last.wall
            if span < WINDOW_SECONDS:
                return self.busy
            spent = (machine - self.last.machine) - (own - self.last.own)
            self.busy = max(0.0, spent / span)
            self.last = _Sample(wall, machine, own)
            return self.busy


class StreamRegistry:
    """The compute streams of this process: a thread computing now (inside
    ``compute_stream``) or within the last ``ACTIVE_SECONDS``."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.last: dict[int, float] = {}  # thread ident -> when it last computed
        self.inside: dict[int, int] = {}  # thread ident -> compute_stream depth

    def touch(self, ident: int) -> int:
        """Mark ``ident`` as computing now; the number of active streams."""
        now = self.clock()
        with self.lock:
            self.last[ident] = now
            for k in [k for k, t in self.last.items()
                      if now - t > ACTIVE_SECONDS and not self.inside.get(k)]:
                del self.last[k]
            return len(self.last)

    def enter(self, ident: int) -> None:
        with self.lock:
            self.inside[ident] = self.inside.get(ident, 0) + 1
        self.touch(ident)

    def leave(self, ident: int) -> None:
        with self.lock:
            depth = self.inside.get(ident, 0) - 1
            if depth > 0:
                self.inside[ident] = depth
            else:
                self.inside.pop(ident, None)
        self.touch(ident)


_external = ExternalLoad()
_streams = StreamRegistry()


def threads_for_this_stream() -> int:
    """How many threads the calling thread's next forward should use."""
    pinned = pinned_threads()
    if pinned is not None:
        return pinned
    streams = _streams.touch(threading.get_ident())
    return plan_threads(usable_cpus(), _external.update(), streams)


@contextmanager
def compute_stream():
    """Count the calling thread as a compute stream for the whole block (a
    forward, a quantization layer), however long it takes."""
    ident = threading.get_ident()
    _streams.enter(ident)
    try:
        yield
    finally:
        _streams.leave(ident)


def apply_torch_threads() -> int:
    """Size torch's pool for the calling stream; returns the thread count."""
    import torch

    n = threads_for_this_stream()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _openmp_runtime():
    """The OpenMP runtime torch computes with (its wheel's libgomp), or None.
    Other wheels bring their own copies (sentencepiece's libgomp-<hash>.so):
    setting those would change nothing of torch's."""
    import ctypes

    import torch

    torch_dir = os.path.dirname(torch.__file__)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:  # not Linux
        return None
    # torch's own first, then any other (a build that links the system's)
    for path in sorted(paths, key=lambda p: (not p.startswith(torch_dir), p)):
        if path.startswith("/") and ".so" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.omp_set_num_threads  # noqa: B018 - the symbol must exist
                return lib
            except (OSError, AttributeError):
                continue
    return None


def keep_openmp_off_this_thread() -> bool:
    """Make the calling thread (the window's) run torch's parallel regions on
    itself alone, so that it never owns an OpenMP team (see the module
    docstring: one more team throttles every other). Only this thread's setting
    changes: OpenMP keeps the thread count per thread, and torch reads it from
    there. Returns whether the runtime was found."""
    import torch

    torch.get_num_threads()  # torch's per-thread set-up first: it would undo this later
    runtime = _openmp_runtime()
    if runtime is None:
        return False
    runtime.omp_set_num_threads(1)
    return torch.get_num_threads() == 1
