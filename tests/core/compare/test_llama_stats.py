"""llama.cpp's estimators against hand computations on small known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdesk.core.compare.llama_stats import (
    covariance_of_means,
    mean_and_uncertainty,
    median,
    percentile,
    position_stats,
    share_and_uncertainty,
)


def test_mean_and_uncertainty_hand_example():
    x = np.arange(1, 13, dtype=float)  # 1..12
    f, u = mean_and_uncertainty(x)
    # mean 6.5; Σx²/n = 650/12; var = 650/12 − 42.25 = 11.91667; √(var/11)
    assert f == pytest.approx(6.5)
    assert u == pytest.approx(math.sqrt((650 / 12 - 42.25) / 11))
    assert u == pytest.approx(1.040833, abs=1e-6)


def test_uncertainty_is_zero_for_ten_or_fewer_values_and_for_constants():
    assert mean_and_uncertainty(np.arange(10.0)) == (4.5, 0.0)
    assert mean_and_uncertainty(np.full(50, 3.0))[1] == 0.0
    assert mean_and_uncertainty(np.array([])) == (0.0, 0.0)


def test_covariance_of_means_hand_example():
    a = np.arange(12.0)
    b = 2 * a + 1
    # cov(a, b) population = 2 var(a) = 2 · (Σa²/n − ā²) = 2 · (506/12 − 30.25)
    want = 2 * (506 / 12 - 30.25) / 11
    assert covariance_of_means(a, b) == pytest.approx(want)
    assert covariance_of_means(a[:9], b[:9]) == 0.0  # fewer than 10: llama.cpp says 0


def test_percentiles_and_median():
    v = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    assert percentile(v, 0.0) == 0.0 and percentile(v, 1.0) == 10.0
    assert percentile(v, 0.9) == pytest.approx(0.4 * 3 + 0.6 * 10)  # at 3.6
    assert percentile(v, 0.1) == pytest.approx(0.4)
    assert median(v) == 2.0
    assert median(np.array([1.0, 2.0, 4.0, 8.0])) == 3.0


def test_share_uncertainty():
    p, u = share_and_uncertainty(3, 4)
    assert p == 0.75 and u == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    assert share_and_uncertainty(5, 5) == (1.0, 0.0)


def _direct(base, q, tok):
    """Textbook formulas, one position at a time, float64."""
    pb = np.exp(base - base.max()) / np.exp(base - base.max()).sum()
    pq = np.exp(q - q.max()) / np.exp(q - q.max()).sum()
    s = np.sort(pb)[::-1]
    return {
        "nll_q": -math.log(pq[tok]),
        "nll_base": -math.log(pb[tok]),
        "kld": float((pb * np.log(pb / pq)).sum()),
        "p_diff": pq[tok] - pb[tok],
        "same_top": int(np.argmax(pb)) == int(np.argmax(pq)),
        "base_margin": s[0] - s[1],
    }


def test_position_stats_match_textbook_formulas():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 2, (40, 7)).astype(np.float32)
    q = (base + rng.normal(0, 0.7, base.shape)).astype(np.float32)
    tok = rng.integers(0, 7, 40)
    got = position_stats(base, q, tok, block=16)  # several blocks
    for i in range(40):
        want = _direct(base[i].astype(np.float64), q[i].astype(np.float64), tok[i])
        for k, v in want.items():
            assert got[k][i] == pytest.approx(v, rel=1e-6, abs=1e-9), (k, i)


def test_identical_distributions_have_zero_kld_and_full_agreement():
    base = np.random.default_rng(1).normal(0, 3, (20, 11)).astype(np.float32)
    got = position_stats(base, base.copy(), np.zeros(20, dtype=np.int64))
    assert np.all(got["kld"] == 0.0)
    assert np.all(got["p_diff"] == 0.0)
    assert got["same_top"].all()


def test_kld_drops_base_tokens_below_the_floor_like_llama_cpp():
    base = np.array([[0.0, 0.0, -40.0]], dtype=np.float32)  # third: log p ≈ −40.7
    q = np.array([[0.0, 0.0, 0.0]], dtype=np.float32)
    got = position_stats(base, q, np.array([0]))
    lb = base[0] - np.log(np.exp(base[0].astype(np.float64)).sum())
    lq = np.full(3, -math.log(3))
    want = sum(math.exp(lb[i]) * (lb[i] - lq[i]) for i in range(2))  # the third left out
    assert got["kld"][0] == pytest.approx(want, rel=1e-9)
