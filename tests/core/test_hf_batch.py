"""Several transformers backends decoding together in one forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qdesk.core.chat.hf_backend import HFBackend, HFBatch


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval()


def _backend(model) -> HFBackend:
    return HFBackend(model, tokenizer=None, name="tiny", n_ctx=256)


def _alone(model, ids) -> np.ndarray:
    return _backend(model).score(ids)[-1]


@pytest.mark.parametrize("lengths", [(9, 9), (5, 17, 11)])
def test_batched_steps_equal_single_steps(tiny_llama, lengths):
    rng = np.random.default_rng(len(lengths))
    prompts = [list(rng.integers(0, 97, n)) for n in lengths]
    members = [_backend(tiny_llama) for _ in prompts]
    for m, p in zip(members, prompts):
        m.prefill(p)
    batch = HFBatch(members)
    seqs = [list(p) for p in prompts]
    for _ in range(4):  # rows of different lengths: left padding, masked
        ids = [int(i) for i in rng.integers(0, 97, len(members))]
        out = batch.step(ids)
        for row, (seq, i) in enumerate(zip(seqs, ids)):
            seq.append(i)
            np.testing.assert_allclose(out[row], _alone(tiny_llama, seq), atol=1e-4)
    # Each member's own cache comes back without the padding and decodes on.
    batch.leave()
    for m, seq in zip(members, seqs):
        assert m.tokens == seq and m._batch is None
        np.testing.assert_allclose(m.feed([3]), _alone(tiny_llama, seq + [3]), atol=1e-4)
        assert m._cache.get_seq_length() == len(seq) + 1


def test_a_single_call_on_a_member_ends_the_batch(tiny_llama):
    a, b = _backend(tiny_llama), _backend(tiny_llama)
    a.prefill([1, 2, 3])
    b.prefill([4, 5])
    batch = HFBatch([a, b])
    batch.step([6, 7])
    a.prefill([1, 2, 3, 6, 8])  # crops a's own cache: the batch hands caches back first
    assert a._batch is None and b._batch is None and b.tokens == [4, 5, 7]
    with pytest.raises(RuntimeError):
        batch.step([1, 1])
    np.testing.assert_allclose(b.feed([9]), _alone(tiny_llama, [4, 5, 7, 9]), atol=1e-4)


def test_copy_cache_from_shares_the_prefix_without_computing(tiny_llama):
    a, b = _backend(tiny_llama), _backend(tiny_llama)
    a.prefill([10, 11, 12, 13])
    b.copy_cache_from(a)
    assert b.tokens == a.tokens
    np.testing.assert_allclose(b.feed([14]), _alone(tiny_llama, [10, 11, 12, 13, 14]), atol=1e-4)
    np.testing.assert_allclose(a.feed([15]), _alone(tiny_llama, [10, 11, 12, 13, 15]), atol=1e-4)


def test_what_cannot_batch_is_refused(tiny_llama):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )).eval()
    a, b, c = _backend(tiny_llama), _backend(tiny_llama), _backend(other)
    a.prefill([1, 2])
    c.prefill([1, 2])
    assert not a.can_batch_with(b)  # b holds nothing yet
    assert not a.can_batch_with(c)  # other weights
    with pytest.raises(ValueError):
        HFBatch([a, b])
    with pytest.raises(ValueError):
        b.copy_cache_from(c)
