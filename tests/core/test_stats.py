import numpy as np
import pytest

from qdesk.core.chat.events import SamplingConfig
from qdesk.core.chat.generate import StopStringFilter, choose_token
from qdesk.core.chat.stats import (
    DistributionStats,
    apply_repetition_penalty,
    sampling_distribution,
    softmax,
    token_distribution,
    top_k_sorted,
)
from qdesk.core.errors import BadInput


def distribution_stats(probs: np.ndarray, k: int) -> DistributionStats:
    """The direct float64 definition, the reference for the fast path."""
    top = top_k_sorted(probs, max(k, 2))
    top_p = probs[top]
    nz = probs[probs > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return DistributionStats(
        top_ids=tuple(int(i) for i in top[:k]),
        top_probs=tuple(float(p) for p in top_p[:k]),
        margin=float(top_p[0] - top_p[1]),
        entropy=max(entropy, 0.0),
    )


def test_softmax_matches_direct_formula():
    z = np.array([1.0, 2.0, 3.0, -1.0])
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(softmax(z), expected, rtol=1e-12)
    np.testing.assert_allclose(softmax(z, 0.5), np.exp(2 * z) / np.exp(2 * z).sum(), rtol=1e-12)


def test_distribution_stats_on_a_known_distribution():
    p = np.array([0.1, 0.5, 0.3, 0.1])
    s, _ = token_distribution(np.log(p), k=3)
    assert s.top_ids == (1, 2, 0)  # ties broken by lower id
    assert s.top_probs == pytest.approx((0.5, 0.3, 0.1))
    assert s.margin == pytest.approx(0.2)
    assert s.entropy == pytest.approx(-(p * np.log(p)).sum())


def test_margin_and_topk_invariants_on_random_logits():
    rng = np.random.default_rng(0)
    for _ in range(50):
        probs = softmax(rng.normal(size=1000) * rng.uniform(0.1, 10))
        s = distribution_stats(probs, 5)
        assert 0.0 <= s.margin <= 1.0
        assert list(s.top_probs) == sorted(s.top_probs, reverse=True)
        assert sum(s.top_probs) <= 1.0 + 1e-12
        assert s.top_ids[0] == int(np.argmax(probs))


def test_top_k_sorted_returns_largest_first():
    p = np.array([0.05, 0.4, 0.05, 0.3, 0.2])
    assert top_k_sorted(p, 3).tolist() == [1, 3, 4]


def test_repetition_penalty_follows_transformers_rule():
    z = np.array([2.0, -2.0, 1.0])
    out = apply_repetition_penalty(z, np.array([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_top_k_and_top_p_filters():
    z = np.log(np.array([0.5, 0.25, 0.15, 0.1]))
    d = sampling_distribution(z, 1.0, top_k=2, top_p=1.0)
    np.testing.assert_allclose(d, [2 / 3, 1 / 3, 0, 0])
    d = sampling_distribution(z, 1.0, top_k=0, top_p=0.7)
    np.testing.assert_allclose(d, [2 / 3, 1 / 3, 0, 0])
    d = sampling_distribution(z, 1.0, top_k=0, top_p=0.3)
    np.testing.assert_allclose(d, [1, 0, 0, 0])


def test_sampling_is_reproducible_with_a_seed_and_follows_the_distribution():
    z = np.log(np.array([0.6, 0.3, 0.1]))
    cfg = SamplingConfig(temperature=1.0, seed=7)
    draws = [choose_token(z, cfg, np.random.default_rng(7), np.array([]))[0] for _ in range(3)]
    assert len(set(draws)) == 1
    rng = np.random.default_rng(1)
    counts = np.bincount(
        [choose_token(z, cfg, rng, np.array([]))[0] for _ in range(4000)], minlength=3
    )
    np.testing.assert_allclose(counts / 4000, [0.6, 0.3, 0.1], atol=0.03)
    token, p = choose_token(z, SamplingConfig(), rng, np.array([]))
    assert (token, p) == (0, 1.0)


def test_stop_string_filter_keeps_pieces_exact():
    f = StopStringFilter(["</end>"])
    out = []
    for piece in ["Hello ", "wor", "ld </", "en", "d> tail"]:
        text, stopped = f.push(piece)
        out.append(text)
        if stopped:
            break
    assert "".join(out) == "Hello world "
    assert stopped


def test_sampling_config_rejects_bad_values():
    for bad in [dict(temperature=-1), dict(top_p=0), dict(top_k=-1), dict(max_new_tokens=0),
                dict(repetition_penalty=0), dict(stop=("",))]:
        with pytest.raises(BadInput):
            SamplingConfig(**bad)


def test_fast_token_distribution_matches_the_float64_reference():
    rng = np.random.default_rng(3)
    for scale in (0.1, 1.0, 5.0, 30.0):
        z = (rng.normal(size=49152) * scale).astype(np.float32)
        fast, probs = token_distribution(z, 5)
        ref = distribution_stats(softmax(z), 5)
        assert fast.top_ids == ref.top_ids
        np.testing.assert_allclose(fast.top_probs, ref.top_probs, rtol=1e-5, atol=1e-9)
        assert fast.margin == pytest.approx(ref.margin, rel=1e-5, abs=1e-9)
        assert fast.entropy == pytest.approx(ref.entropy, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(probs, softmax(z), atol=1e-7)
