"""qdesk's own decode step (chat/decode_step.py): bit for bit the model's forward,
per family, dense and packed; the forward wherever the step must not run."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from families import demo_tokenizer, tiny_model

from qdesk.core.chat.decode_step import DecodeStep, decode_step_for, use_decode_step
from qdesk.core.chat.hf_backend import HFBackend, HFBatch

PROMPT = list(range(30, 47))


class CountedForward:
    """Counts the model's forward calls (an instance attribute: no hook, so the
    step stays usable)."""

    def __init__(self, model) -> None:
        self.calls, self.own = 0, model.forward
        model.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.own(*args, **kwargs)


def _greedy(backend: HFBackend, steps: int = 6, prompt=PROMPT) -> tuple[np.ndarray, list[int]]:
    backend.reset()
    rows = [backend.prefill(prompt)]
    fed = []
    for _ in range(steps):
        fed.append(int(np.argmax(rows[-1])))
        rows.append(backend.feed([fed[-1]]))
    return np.stack(rows), fed


def _with_and_without_step(model, steps: int = 6):
    """(rows through the step, rows through the forward, forward calls for the former)."""
    counted = CountedForward(model)
    got, fed = _greedy(HFBackend(model, None, "step", 256), steps)
    calls = counted.calls
    use_decode_step(model, False)
    want, want_fed = _greedy(HFBackend(model, None, "forward", 256), steps)
    use_decode_step(model, True)
    assert fed == want_fed
    return got, want, calls


@pytest.mark.parametrize("family,dtype", [
    ("llama", torch.float32), ("llama", torch.bfloat16), ("mistral", torch.float32),
    ("qwen2", torch.float32), ("qwen3", torch.bfloat16),
])
def test_the_step_is_the_forward_bit_for_bit(family, dtype):
    model = tiny_model(family, seed=3, dtype=dtype)
    got, want, calls = _with_and_without_step(model)
    assert isinstance(decode_step_for(model), DecodeStep) and decode_step_for(model).verified
    # the prefill and the first step's comparison ran the forward; the other five did not
    assert calls == 2
    assert np.array_equal(got, want)


def test_a_packed_model_steps_bit_for_bit_exact_and_with_int8_activations(tmp_path):
    from packed_helpers import write_rtn_checkpoint

    from qdesk.core.models import open_model
    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    source = tiny_model("llama", seed=5)
    ckpt = write_rtn_checkpoint(source, demo_tokenizer(), tmp_path / "q", bits=4, group=64)
    loaded = open_model(str(ckpt), backend="hf", dtype="float32")
    assert "stacked" in loaded.facts.quantization["runtime"]
    layer = loaded.model.model.layers[0]
    assert decode_step_for(loaded.model) is not None
    plan = decode_step_for(loaded.model)._current_plan()
    assert plan.layers[0].qkv is not None  # one product for q/k/v
    assert "forward" in vars(layer.mlp)  # the fused MLP
    got, want, calls = _with_and_without_step(loaded.model)
    assert calls == 2 and np.array_equal(got, want)
    assert loaded.set_int8_activations(True)
    got8, want8, _ = _with_and_without_step(loaded.model)
    assert np.array_equal(got8, want8) and not np.array_equal(got8, got)


def test_a_hook_sends_the_step_through_the_forward():
    model = tiny_model("llama", seed=4)
    backend = HFBackend(model, None, "hooked", 256)
    want, fed = _greedy(backend)
    seen = []
    handle = model.model.layers[1].self_attn.register_forward_hook(lambda *a: seen.append(1))
    got, _ = _greedy(backend)
    handle.remove()
    assert len(seen) == 1 + len(fed)  # the prefill and every decode step
    assert np.array_equal(got, want)
    counted = CountedForward(model)
    _greedy(backend)
    assert counted.calls == 1  # hook gone: the step again


def test_a_replaced_module_is_called_in_the_next_step():
    """The step reads the model's modules again after any module is set (a
    quantization packing its Linears in place)."""
    model = tiny_model("llama", seed=6)
    backend = HFBackend(model, None, "swap", 256)
    _greedy(backend)
    old = model.model.layers[0].mlp.down_proj
    calls = []

    class Doubled(torch.nn.Module):
        def forward(self, x):
            calls.append(1)
            return 2 * old(x)

    model.model.layers[0].mlp.down_proj = Doubled()
    got, _ = _greedy(backend, steps=3)
    assert len(calls) == 1 + 3
    use_decode_step(model, False)
    want, _ = _greedy(backend, steps=3)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("family,overrides", [
    ("gemma3", {}), ("phi3", {}), ("qwen3_moe", {}), ("mistral", {"sliding_window": 8}),
])
def test_other_layouts_run_the_forward(family, overrides):
    model = tiny_model(family, **overrides)
    assert decode_step_for(model) is None


def test_an_eager_model_and_the_switch_run_the_forward(monkeypatch):
    model = tiny_model("llama")
    model.set_attn_implementation("eager")
    assert decode_step_for(model) is None
    monkeypatch.setenv("QDESK_DECODE_STEP", "transformers")
    assert decode_step_for(tiny_model("llama")) is None


def test_a_step_that_differs_from_the_forward_is_turned_off(caplog):
    model = tiny_model("llama", seed=7)
    step = decode_step_for(model)
    own = step.attention
    step.attention = lambda *args, **kw: (2 * own(*args, **kw)[0], None)  # a wrong step
    backend = HFBackend(model, None, "wrong", 256)
    with caplog.at_level(logging.WARNING, logger="qdesk.core.chat.decode_step"):
        got, _ = _greedy(backend)
    assert decode_step_for(model) is None
    assert "differs from LlamaForCausalLM's forward" in caplog.text
    want, _ = _greedy(backend)
    assert np.array_equal(got, want)


def test_forks_crops_and_batches_share_the_steps_cache():
    model = tiny_model("llama", seed=8)
    a = HFBackend(model, None, "a", 256)
    a.prefill(PROMPT)
    for t in (5, 6, 7):
        a.feed([t])
    b = a.fork()
    b.copy_cache_from(a)
    a.feed([9])
    b.feed([10])
    rows = HFBatch([a, b]).step([11, 12])
    a_alone = HFBackend(model, None, "x", 256).score(PROMPT + [5, 6, 7, 9, 11])[-1]
    np.testing.assert_allclose(rows[0], a_alone, atol=1e-4)
    # back to after token 5 (a crop), then one token: the step goes on from there
    np.testing.assert_allclose(b.prefill(PROMPT + [5, 8]), HFBackend(model, None, "y", 256).score(
        PROMPT + [5, 8])[-1], atol=1e-4)


def test_a_model_that_stepped_is_freed_when_dropped():
    import gc
    import weakref

    model = tiny_model("llama", seed=9)
    backend = HFBackend(model, None, "gone", 256)
    _greedy(backend, steps=2)
    assert decode_step_for(model).verified
    gone = weakref.ref(model)
    backend.close()
    del model, backend
    gc.collect()
    assert gone() is None
