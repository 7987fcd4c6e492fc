"""Per-token statistics of a next-token distribution, and the sampler.

All functions take raw logits as a 1-D float array over the vocabulary.
They work in float64 so that tiny probabilities and near ties stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DistributionStats:
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    margin: float  # p1 - p2, in [0, 1]
    entropy: float  # nats


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float64 probabilities (for sampling, where exact tails matter)."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature != 1.0:
        z = z / temperature
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def top_k_sorted(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first (ties by lower id)."""
    k = min(k, values.shape[0])
    part = np.argpartition(-values, k - 1)[:k]
    return part[np.lexsort((part, -values[part]))]


def token_distribution(logits: np.ndarray, k: int) -> tuple[DistributionStats, np.ndarray]:
    """Statistics of softmax(logits) at temperature 1, and the probabilities.

    This runs once per generated token, so it is written for speed: float32
    exponentials with a float64 sum, entropy from one dot product
    (H = log S - sum(e * y) / S with y = z - max z, e = exp y, S = sum e),
    and top-k by partial sort. Probabilities agree with a float64 softmax to
    about 1e-8 absolute.
    """
    z = np.asarray(logits, dtype=np.float32)
    y = z - z.max()
    e = np.exp(y)
    total = float(e.sum(dtype=np.float64))
    entropy = np.log(total) - float(np.dot(e, y)) / total
    probs = e * np.float32(1.0 / total)
    top = top_k_sorted(z, max(k, 2))
    top_p = probs[top].astype(np.float64)
    stats = DistributionStats(
        top_ids=tuple(int(i) for i in top[:k]),
        top_probs=tuple(float(p) for p in top_p[:k]),
        margin=float(max(top_p[0] - top_p[1], 0.0)),
        entropy=max(float(entropy), 0.0),
    )
    return stats, probs


def apply_repetition_penalty(logits: np.ndarray, history: np.ndarray, penalty: float) -> np.ndarray:
    """transformers' rule: a seen token's positive logit is divided, a negative one multiplied."""
    if penalty == 1.0 or history.size == 0:
        return logits
    out = np.array(logits, dtype=np.float64)
    seen = np.unique(history)
    vals = out[seen]
    out[seen] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def sampling_distribution(
    logits: np.ndarray, temperature: float, top_k: int, top_p: float
) -> np.ndarray:
    """The distribution a token is drawn from (temperature > 0), zeros outside the filters."""
    probs = softmax(logits, temperature)
    if 0 < top_k < probs.shape[0]:
        keep = top_k_sorted(probs, top_k)
        mask = np.zeros_like(probs, dtype=bool)
        mask[keep] = True
        probs = np.where(mask, probs, 0.0)
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        n_keep = int(np.searchsorted(cum, top_p * cum[-1]) + 1)
        drop = order[n_keep:]
        probs = probs.copy()
        probs[drop] = 0.0
    return probs / probs.sum()
