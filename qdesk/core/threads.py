"""How many threads torch and llama.cpp compute with, and how their threads wait.

What this rests on (read in the libraries, checked on this machine):

- One OpenMP runtime serves the whole process. torch's wheel bundles a
  ``libgomp.so.1``, llama.cpp links the system's ``libgomp.so.1``; the same
  soname, so whichever loads first serves both (``/proc/self/maps`` shows one).
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

So the policy is about thread counts: every compute stream (a thread that runs
model forwards: the chat panes, interleaved in one thread; a scorer stepping in
its own thread; a quantization job) uses as many threads as there are cores
not busy with other work. ``threads_for_this_stream`` measures that: the CPU
the whole machine spent over the last half second, less what this stream spent
itself (its own thread's CPU time times its team size), is the others' share.
The backends call it before each forward (cheap: a clock read; ``/proc/stat``
at most every half second) and resize llama.cpp's context
(``llama_set_n_threads``) or torch's pool (``torch.set_num_threads``, which is
process-wide) when the answer changes. ``QDESK_THREADS=N`` pins every pool to
N threads instead. ``benchmarks/bench_chat.py`` measures the policy against
PASSIVE and ACTIVE in each situation.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

WINDOW_SECONDS = 0.5  # how often a stream looks at the machine again
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


def plan_threads(cpus: int, others_busy: float) -> int:
    """Threads for one stream: the cores the others leave free, at least one.

    A core the others use for less than 1 - MARGIN of the time counts as free:
    a team that shares a core briefly loses little, one whose member is
    descheduled at every barrier loses most of its speed (see the module
    docstring)."""
    return max(1, min(cpus, int(cpus - max(0.0, others_busy) + MARGIN)))


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


@dataclass
class _Sample:
    wall: float
    machine: float
    own: float


class StreamSampler:
    """The others' load, seen from one compute stream (one per thread).

    ``read`` supplies (wall seconds, machine busy CPU seconds, this thread's CPU
    seconds); tests pass their own."""

    def __init__(self, read=None) -> None:
        self.read = read or (lambda: (time.monotonic(), machine_busy_seconds(),
                                      time.thread_time()))
        self.last: _Sample | None = None
        self.others = 0.0  # cores busy with other work, over the last window
        self.threads = None  # the team size this stream computes with

    def update(self, team: int) -> float:
        """The others' busy cores, refreshed when a window has passed."""
        wall, machine, own = self.read()
        if machine is None:
            return self.others
        if self.last is None:
            self.last = _Sample(wall, machine, own)
            return self.others
        span = wall - self.last.wall
        if span < WINDOW_SECONDS:
            return self.others
        spent = machine - self.last.machine
        mine = (own - self.last.own) * team  # this stream's thread and its team's workers
        self.others = max(0.0, (spent - mine) / span)
        self.last = _Sample(wall, machine, own)
        return self.others


_local = threading.local()


def threads_for_this_stream() -> int:
    """How many threads the calling thread's next forward should use."""
    pinned = pinned_threads()
    if pinned is not None:
        return pinned
    sampler = getattr(_local, "sampler", None)
    if sampler is None:
        sampler = _local.sampler = StreamSampler()
    cpus = usable_cpus()
    team = sampler.threads or cpus
    sampler.threads = plan_threads(cpus, sampler.update(team))
    return sampler.threads


def apply_torch_threads() -> int:
    """Size torch's pool for the calling stream; returns the thread count."""
    import torch

    n = threads_for_this_stream()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
