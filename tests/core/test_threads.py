"""The thread policy: the cores other processes leave free, shared among the
process's active compute streams; pinning; the backends resize their pools
before a forward."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from qdesk.core import threads
from qdesk.core.threads import ExternalLoad, StreamRegistry, plan_threads


@pytest.mark.parametrize("cpus,others,streams,want", [
    (2, 0.0, 1, 2), (2, 0.2, 1, 2), (2, 0.5, 1, 1), (2, 1.0, 1, 1), (2, 3.5, 1, 1),
    (8, 0.0, 1, 8), (8, 2.0, 1, 6), (8, 2.6, 1, 5), (16, 15.9, 1, 1), (4, -0.2, 1, 4),
    (2, 0.0, 2, 1), (8, 0.0, 2, 4), (8, 2.0, 3, 2), (4, 0.0, 8, 1),
])
def test_plan_shares_what_other_processes_leave_free(cpus, others, streams, want):
    assert plan_threads(cpus, others, streams) == want


class _Clock:
    """Readings of (wall, machine busy CPU seconds, this process's CPU seconds)."""

    def __init__(self):
        self.values = [(0.0, 100.0, 10.0)]

    def __call__(self):
        return self.values[-1]

    def advance(self, wall, machine, own):
        w, m, o = self.values[-1]
        self.values.append((w + wall, m + machine, o + own))


def test_external_load_is_what_other_processes_spent():
    clock = _Clock()
    load = ExternalLoad(clock)
    assert load.update() == 0.0  # first reading: nothing known yet
    # one second: the machine spent 2.9 CPU seconds, this process 2.0 of them
    clock.advance(1.0, 2.9, 2.0)
    assert load.update() == pytest.approx(0.9)
    clock.advance(0.2, 0.6, 0.2)  # within the window: the last figure stands
    assert load.update() == pytest.approx(0.9)
    clock.advance(0.4, 0.3, 0.3)  # 0.6 s since the last refresh: others used 0.4 of 0.6 s
    assert load.update() == pytest.approx((0.9 - 0.5) / 0.6)


def test_external_load_without_proc_stat_assumes_free_cores():
    assert ExternalLoad(lambda: (0.0, None, 0.0)).update() == 0.0


def test_streams_count_while_computing_and_a_moment_after():
    now = [0.0]
    reg = StreamRegistry(clock=lambda: now[0])
    assert reg.touch(1) == 1
    reg.enter(2)  # a long computation (a quantization layer, a tuned block)
    now[0] = 0.5
    assert reg.touch(1) == 2
    now[0] = 10.0  # stream 2 still inside: it counts however long it takes
    assert reg.touch(1) == 2
    reg.leave(2)
    now[0] = 10.0 + threads.ACTIVE_SECONDS / 2
    assert reg.touch(1) == 2  # it computed a moment ago (the gap between two forwards)
    now[0] = 10.0 + 2 * threads.ACTIVE_SECONDS
    assert reg.touch(1) == 1
    reg.enter(3)
    reg.enter(3)  # nested: counted until the outer block ends
    reg.leave(3)
    now[0] = 20.0
    assert reg.touch(1) == 2
    reg.leave(3)
    now[0] = 20.0 + 2 * threads.ACTIVE_SECONDS
    assert reg.touch(1) == 1


def test_two_streams_of_one_process_share_the_cores(monkeypatch):
    monkeypatch.delenv("QDESK_THREADS", raising=False)
    monkeypatch.setattr(threads, "_streams", StreamRegistry())
    monkeypatch.setattr(threads, "_external", ExternalLoad(lambda: (0.0, None, 0.0)))
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    assert threads.threads_for_this_stream() == 4
    started, release, seen = threading.Event(), threading.Event(), []

    def other_stream():
        with threads.compute_stream():
            started.set()
            release.wait(10)

    t = threading.Thread(target=other_stream)
    t.start()
    started.wait(10)
    seen.append(threads.threads_for_this_stream())
    release.set()
    t.join()
    assert seen == [2]


def test_pin_and_the_users_omp_num_threads(monkeypatch):
    monkeypatch.setenv("QDESK_THREADS", "3")
    assert threads.threads_for_this_stream() == 3
    monkeypatch.delenv("QDESK_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads.configure_openmp()
    assert os.environ["QDESK_THREADS"] == "1"
    assert threads.threads_for_this_stream() == 1


def test_no_process_wide_wait_policy_is_set():
    code = ("import os; from qdesk.core.threads import configure_openmp; configure_openmp(); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "None"


def test_machine_busy_seconds_reads_proc_stat():
    busy = threads.machine_busy_seconds()
    if busy is None:
        pytest.skip("no /proc/stat here")
    assert busy > 0


@pytest.mark.slow
def test_llama_cpp_context_follows_the_plan(demo_gguf, monkeypatch):
    import llama_cpp

    backend = demo_gguf.backend
    ctx = backend.llm._ctx.ctx
    try:
        for n in (1, 2):
            monkeypatch.setenv("QDESK_THREADS", str(n))
            backend.reset()  # a prefill of the ids it holds runs no forward (TokenCache)
            backend.prefill(backend.tokenizer.encode_chat([{"role": "user", "content": "Hi"}]))
            assert llama_cpp.llama_n_threads(ctx) == n == llama_cpp.llama_n_threads_batch(ctx)
    finally:
        monkeypatch.delenv("QDESK_THREADS")
        backend.reset()


def test_torch_pool_follows_the_plan(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("QDESK_THREADS", "1")
        assert threads.apply_torch_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_the_window_thread_keeps_openmp_to_itself_and_others_keep_their_teams():
    """keep_openmp_off_this_thread changes the calling thread's OpenMP setting only
    (run in threads of their own: the test process's main thread is left as it is)."""
    import torch

    seen = {}

    def window_thread():
        seen["found"] = threads.keep_openmp_off_this_thread()
        seen["window"] = torch.get_num_threads()
        # and it still computes, on itself
        seen["sum"] = float(torch.ones(1 << 16).sum())

    def compute_thread():
        torch.set_num_threads(2)
        seen["compute"] = torch.get_num_threads()

    for target in (window_thread, compute_thread):
        t = threading.Thread(target=target)
        t.start()
        t.join()
    if not seen["found"]:
        pytest.skip("no OpenMP runtime found in /proc/self/maps")
    assert seen["window"] == 1 and seen["sum"] == float(1 << 16)
    assert seen["compute"] == 2


def test_the_openmp_runtime_is_torchs_own():
    import os

    import torch

    runtime = threads._openmp_runtime()
    if runtime is None:
        pytest.skip("no OpenMP runtime found in /proc/self/maps")
    # sentencepiece's wheel brings its own libgomp; setting that one changes nothing of torch's
    with open("/proc/self/maps") as f:
        torchs = {line.split()[-1] for line in f
                  if "omp" in line.rsplit("/", 1)[-1] and os.path.dirname(torch.__file__) in line}
    if torchs:
        assert runtime._name in torchs
