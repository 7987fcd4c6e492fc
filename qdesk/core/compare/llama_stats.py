"""llama.cpp's ``llama-perplexity --kl-divergence`` estimators, as pure functions.

The definitions follow tools/perplexity/perplexity.cpp (read, not copied):

- mean ± uncertainty: f = Σx/n, var = Σx²/n − f², uncertainty = √(var/(n−1)),
  reported as 0 when var ≤ 0 or n ≤ 10;
- covariance of two means: (Σab/n − (Σa/n)(Σb/n)) / (n−1), 0 when n < 10;
- percentiles interpolate linearly between sorted values at fraction·(n−1);
  the median is the middle value (the mean of the two middle ones for even n);
- a binomial share p has uncertainty √(p(1−p)/(n−1)).
"""

from __future__ import annotations

import math

import numpy as np


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """(mean, standard error of the mean) with llama.cpp's conventions."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 1:
        return 0.0, 0.0
    f = float(x.sum() / n)
    var = float((x * x).sum() / n - f * f)
    return f, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def covariance_of_means(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.size
    if n < 10:
        return 0.0
    return float(((a * b).sum() / n - (a.sum() / n) * (b.sum() / n)) / (n - 1))


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """Linear interpolation at fraction·(n−1) in ascending ``sorted_values``."""
    v = sorted_values
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    p = fraction * (v.size - 1)
    i = int(p)
    p -= i
    return float((1 - p) * v[i] + p * v[min(i + 1, v.size - 1)])


def median(sorted_values: np.ndarray) -> float:
    v = sorted_values
    n = v.size
    return float(0.5 * (v[n // 2] + v[n // 2 - 1]) if n % 2 == 0 else v[n // 2])


def share_and_uncertainty(hits: int, n: int) -> tuple[float, float]:
    if n < 1:
        return 0.0, 0.0
    p = hits / n
    return p, (math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0)


# llama.cpp drops base log-probabilities at or below this from the KL sum
# (they are below the range its 16-bit log-prob file stores).
KLD_LOG_P_FLOOR = -16.0


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def position_stats(
    base_logits: np.ndarray, q_logits: np.ndarray, next_ids: np.ndarray, block: int = 32
) -> dict[str, np.ndarray]:
    """Per-position figures for rows of logits that predict ``next_ids``.

    base_logits, q_logits: (n, vocab); next_ids: (n,) the tokens that follow.
    Returns float64/bool arrays of shape (n,): nll_q, nll_base (nats), kld
    (KL(base‖Q) over base log-probs above the floor, nats), p_diff (Q's minus
    base's probability of the next token), same_top, base_margin (p1 − p2 of
    base), base_top (base's top-1 id), base_p1.
    """
    n = base_logits.shape[0]
    if q_logits.shape != base_logits.shape or next_ids.shape != (n,):
        raise ValueError(f"shapes differ: {base_logits.shape}, {q_logits.shape}, {next_ids.shape}")
    out = {
        k: np.empty(n, dtype=np.float64)
        for k in ("nll_q", "nll_base", "kld", "p_diff", "base_margin", "base_p1")
    }
    out["same_top"] = np.empty(n, dtype=bool)
    out["base_top"] = np.empty(n, dtype=np.int64)
    for s in range(0, n, block):  # blocks keep float64 copies of the logits small
        e = min(s + block, n)
        lb = log_softmax_rows(base_logits[s:e])
        lq = log_softmax_rows(q_logits[s:e])
        rows = np.arange(e - s)
        tok = next_ids[s:e]
        out["nll_q"][s:e] = -lq[rows, tok]
        out["nll_base"][s:e] = -lb[rows, tok]
        pb = np.exp(lb)
        terms = np.where(lb > KLD_LOG_P_FLOOR, pb * (lb - lq), 0.0)
        out["kld"][s:e] = terms.sum(axis=1)
        out["p_diff"][s:e] = np.exp(lq[rows, tok]) - pb[rows, tok]
        top_b = np.argmax(base_logits[s:e], axis=1)
        out["same_top"][s:e] = top_b == np.argmax(q_logits[s:e], axis=1)
        out["base_top"][s:e] = top_b
        two = -np.partition(-pb, 1, axis=1)[:, :2]
        out["base_p1"][s:e] = two[:, 0]
        out["base_margin"][s:e] = two[:, 0] - two[:, 1]
    return out
