"""The static-cache backend and on-device statistics, run eagerly on the CPU (the
compiled CUDA-graph step only on a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qdesk.core.chat.hf_backend import HFBackend
from qdesk.core.chat.stats import token_distribution
from qdesk.core.gpu import StaticCacheBackend, device_stats, stats_from_packed


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def test_device_stats_agree_with_the_host_statistics():
    logits = torch.randn(5000, generator=torch.Generator().manual_seed(1)) * 4
    got = stats_from_packed(device_stats(logits, 5), 5)
    want, _ = token_distribution(logits.numpy(), 5)
    assert got.top_ids == want.top_ids
    np.testing.assert_allclose(got.top_probs, want.top_probs, rtol=1e-6)
    assert got.margin == pytest.approx(want.margin, rel=1e-5, abs=1e-7)
    assert got.entropy == pytest.approx(want.entropy, rel=1e-5)


def test_static_cache_decodes_like_the_dynamic_cache(tiny):
    dynamic = HFBackend(tiny, None, "dyn", 256)
    static = StaticCacheBackend(tiny, None, "static", 256, max_len=64)
    prompt = [5, 17, 3, 44, 9, 12]
    a, b = dynamic.prefill(prompt), static.prefill(prompt)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    for _ in range(5):
        tok = int(np.argmax(a))
        a, b = dynamic.feed([tok]), static.feed([tok])
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        assert static.device_stats(3).top_ids[0] == tok_next(a)
    # a shorter prefix again: positions past it are masked, then overwritten
    b = static.prefill(prompt[:4] + [70])
    np.testing.assert_allclose(b, dynamic.prefill(prompt[:4] + [70]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="static cache holds 64"):
        static.feed(list(range(80)))


def tok_next(logits):
    return int(np.argmax(logits))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_step_on_the_gpu(tiny):
    model = tiny.to("cuda", torch.bfloat16)
    eager = StaticCacheBackend(model, None, "eager", 256, max_len=64, compile_step=False)
    graphs = StaticCacheBackend(model, None, "graphs", 256, max_len=64, compile_step=True)
    prompt = [5, 17, 3, 44]
    a, b = eager.prefill(prompt), graphs.prefill(prompt)
    for _ in range(8):
        tok = int(np.argmax(a))
        a, b = eager.feed([tok]), graphs.feed([tok])
        assert int(np.argmax(a)) == int(np.argmax(b))
    model.to("cpu", torch.float32)
