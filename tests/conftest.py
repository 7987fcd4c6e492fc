"""Shared fixtures: the real demo model, loaded once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see qdesk/core/threads.py
# Pinned thread counts: a float32 sum's rounding depends on how many threads share
# it, and tests compare bit for bit (the app adapts to the free cores instead).
os.environ.setdefault("QDESK_THREADS", str(len(os.sched_getaffinity(0))))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_hf():
    """The dense BF16 demo folder on the transformers backend."""
    from qdesk.core.models import open_model

    loaded = open_model("demo", backend="hf")
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def demo_hf32(demo_hf):
    """The dense demo in float32 whatever this CPU prefers: for checks that two
    ways of computing the same thing agree to float32 rounding (in bf16 the
    rounding of a batched or incremental step differs visibly)."""
    from qdesk.core.models import open_model

    if demo_hf.facts.dtype == "float32":
        yield demo_hf
        return
    loaded = open_model("demo", backend="hf", dtype="float32")
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def demo_gguf():
    """The shipped Q4_1 GGUF on the llama.cpp backend."""
    from qdesk.core.models import open_model

    loaded = open_model("demo", backend="llamacpp")
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def demo_gguf_path():
    from qdesk.core.models.demo import demo_gguf_path

    return demo_gguf_path()
