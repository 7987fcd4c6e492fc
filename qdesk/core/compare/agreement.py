"""Per-token agreement between a pane's model and the reference on one prefix.

Both distributions are at temperature 1 over the full vocabulary (raw
logits), whatever the chat samples with, so the figures describe the models,
not the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Agreement:
    """The reference's view of the token a pane just produced.

    ref_top_id / ref_top_p: the reference's top-1 on the pane's prefix and its
    probability; ref_margin: the reference's p1 − p2 there; flip: the pane's
    top-1 differs from the reference's; kld: KL(reference ‖ pane) in nats over
    the whole vocabulary; dp: the pane's minus the reference's probability of
    the token the pane produced.
    """

    ref_top_id: int
    ref_top_p: float
    ref_margin: float
    flip: bool
    kld: float
    dp: float

    def to_json(self) -> dict:
        return asdict(self)


def agreement(ref_logits: np.ndarray, pane_logits: np.ndarray, token: int) -> Agreement:
    """Agreement of one step; both logits: (vocab,), same prefix.

    This runs once per pane token, so it makes few passes over the vocabulary
    and no BLAS call (np.dot's threads stall on a busy machine):
    KL(r‖p) = Σ p_r (z_r − z_p) − (lse_r − lse_p), with p_r = exp(z_r − lse_r).
    """
    zr = np.asarray(ref_logits, dtype=np.float32)
    zp = np.asarray(pane_logits, dtype=np.float32)
    ref_top = int(np.argmax(zr))
    pane_top = int(np.argmax(zp))
    mr, mp = zr[ref_top], zp[pane_top]
    er = np.exp(zr - mr)
    sr = float(er.sum(dtype=np.float64))
    sp = float(np.exp(zp - mp).sum(dtype=np.float64))
    lse_r = float(mr) + math.log(sr)
    lse_p = float(mp) + math.log(sp)
    cross = float(np.multiply(er, zr - zp, dtype=np.float64).sum()) / sr
    kld = cross - lse_r + lse_p
    rest = zr.copy()
    rest[ref_top] = -np.inf
    runner_up = float(rest.max())
    p1 = 1.0 / sr  # exp(mr - mr) / sr
    p2 = math.exp(runner_up - float(mr)) / sr
    return Agreement(
        ref_top_id=ref_top,
        ref_top_p=p1,
        ref_margin=p1 - p2,
        flip=ref_top != pane_top,
        kld=max(kld, 0.0),
        dp=math.exp(float(zp[token]) - lse_p) - math.exp(float(zr[token]) - lse_r),
    )


@dataclass(frozen=True)
class ReplyAgreement:
    """A pane's reply against the reference, token by token (teacher forcing).

    first_divergence: the index of the first token where the pane's token is
    not the reference's top-1 on the same prefix (where two greedy paths
    part); None if it never happens.
    """

    tokens: int
    flips: int
    flip_rate: float
    mean_kld: float
    mean_margin: float
    mean_dp: float
    first_divergence: int | None

    def to_json(self) -> dict:
        return asdict(self)


def summarize_reply(values: Sequence[Agreement], token_ids: Sequence[int]) -> ReplyAgreement:
    n = len(values)
    flips = sum(a.flip for a in values)
    first = next(
        (i for i, (a, t) in enumerate(zip(values, token_ids)) if a.ref_top_id != t), None
    )
    return ReplyAgreement(
        tokens=n,
        flips=flips,
        flip_rate=flips / n if n else 0.0,
        mean_kld=float(np.mean([a.kld for a in values])) if n else 0.0,
        mean_margin=float(np.mean([a.ref_margin for a in values])) if n else 0.0,
        mean_dp=float(np.mean([a.dp for a in values])) if n else 0.0,
        first_divergence=first,
    )
