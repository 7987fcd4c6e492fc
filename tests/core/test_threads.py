"""The thread policy: free cores per compute stream, measured per stream; pinning;
the backends resize their pools before a forward."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qdesk.core import threads
from qdesk.core.threads import StreamSampler, plan_threads


@pytest.mark.parametrize("cpus,others,want", [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 3.5, 1),
    (8, 0.0, 8), (8, 2.0, 6), (8, 2.6, 5), (16, 15.9, 1), (4, -0.2, 4),
])
def test_plan_leaves_the_others_their_cores(cpus, others, want):
    assert plan_threads(cpus, others) == want


class _Clock:
    """Readings of (wall, machine busy CPU seconds, this thread's CPU seconds)."""

    def __init__(self):
        self.values = [(0.0, 100.0, 10.0)]

    def __call__(self):
        return self.values[-1]

    def advance(self, wall, machine, own):
        w, m, o = self.values[-1]
        self.values.append((w + wall, m + machine, o + own))


def test_sampler_counts_what_others_spent():
    clock = _Clock()
    s = StreamSampler(clock)
    assert s.update(team=2) == 0.0  # first reading: nothing known yet
    # one second: the machine spent 2.9 CPU seconds, this stream 1.0 on its thread
    # with a team of two (so about 2.0 with its worker): others used 0.9 of a core
    clock.advance(1.0, 2.9, 1.0)
    assert s.update(team=2) == pytest.approx(0.9)
    clock.advance(0.2, 0.6, 0.2)  # within the window: the last figure stands
    assert s.update(team=2) == pytest.approx(0.9)
    clock.advance(0.4, 0.3, 0.3)  # 0.6 s since the last refresh, the machine nearly idle but us
    assert s.update(team=1) == pytest.approx(max(0.0, (0.9 - 0.5) / 0.6))


def test_sampler_without_proc_stat_assumes_free_cores():
    s = StreamSampler(lambda: (0.0, None, 0.0))
    assert s.update(team=2) == 0.0


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
