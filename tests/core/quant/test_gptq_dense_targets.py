"""GPTQ aimed at the dense model's outputs (GPTQConfig.dense_targets, GPTQv2's
asymmetric calibration): without a difference between the streams it is plain
GPTQ bit for bit; with one, the quantized layer on the quantized stream lands
nearer the dense layer on the dense stream than plain GPTQ does."""

from __future__ import annotations

import pytest
import torch

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import GPTQConfig
from qdesk.core.quant.gptq import quantize_gptq
from qdesk.core.quant.stats import InputStats


def _stats(x: torch.Tensor, x_dense: torch.Tensor | None) -> InputStats:
    s = InputStats(x.shape[1], "cpu", True, 64, 1, want_cross=x_dense is not None)
    s.add(x, x_dense)
    return s


def _streams(seed: int = 0, tokens: int = 512, width: int = 128):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=g) / width**0.5 + torch.eye(width)
    x_dense = torch.randn(tokens, width, generator=g) @ mix  # correlated inputs
    drift = 0.1 * torch.randn(tokens, width, generator=g) @ mix  # what earlier layers changed
    w = torch.randn(96, width, generator=g)
    return w, x_dense + drift, x_dense


def test_the_cross_statistic_is_what_the_streams_differ_by():
    w, x, x_dense = _streams()
    s = _stats(x, x_dense)
    assert torch.allclose(s.cross, (x_dense - x).t() @ x, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError):
        _stats(x, x_dense).add(x)  # cross statistics need both streams


def test_without_a_difference_it_is_plain_gptq_bit_for_bit():
    w, x, _ = _streams(1)
    cfg = GPTQConfig(bits=4, group_size=32)
    plain = quantize_gptq(w, cfg, _stats(x, None))
    dense = quantize_gptq(w, GPTQConfig(bits=4, group_size=32, dense_targets=True),
                          _stats(x, x.clone()))
    assert torch.equal(plain.q, dense.q) and torch.equal(plain.scale, dense.scale)


@pytest.mark.parametrize("act_order", [True, False])
def test_it_tracks_the_dense_output_better_than_plain_gptq(act_order):
    """The asymmetry term's weight alpha moves the result from plain GPTQ
    (alpha 0) towards the dense outputs: measured here 3.57 (plain) -> 3.43
    (alpha 0.25) -> 3.25 (alpha 1), against 2.59 for the dense W itself."""
    w, x, x_dense = _streams(2)
    target = x_dense @ w.t()

    def err(alpha: float) -> float:
        cfg = GPTQConfig(bits=4, group_size=32, act_order=act_order, dense_targets=alpha > 0,
                         dense_alpha=alpha or 0.25)
        qw = quantize_gptq(w, cfg, _stats(x, x_dense if alpha > 0 else None))
        return float(((x @ qw.dequantize(torch.float32).t() - target) ** 2).mean())

    plain, quarter, full = err(0.0), err(0.25), err(1.0)
    assert full < quarter < plain and full < 0.95 * plain


def test_dense_targets_are_checked():
    with pytest.raises(BadInput):
        GPTQConfig(dense_targets=True, true_sequential=True)
    with pytest.raises(BadInput):
        GPTQConfig(dense_alpha=9.0)
