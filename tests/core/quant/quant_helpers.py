"""Tiny random Llama models and calibration sets for fast quantization tests."""

from __future__ import annotations

import torch


def tiny_config(**overrides):
    from transformers import LlamaConfig

    options = dict(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    options.update(overrides)
    return LlamaConfig(**options)


def make_tiny(seed: int = 0, dtype=torch.float32, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(**overrides)).to(dtype).eval()


def calib(n: int = 4, tokens: int = 32, vocab: int = 256, seed: int = 0):
    from qdesk.core.quant.calibration import CalibrationSet

    g = torch.Generator().manual_seed(seed)
    return CalibrationSet("random", torch.randint(0, vocab, (n, tokens), generator=g), seed, "test")


