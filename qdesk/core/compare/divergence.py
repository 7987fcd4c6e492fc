"""Divergence of a model from its reference over windows of fixed text.

The text's token ids are cut into consecutive windows of ``ctx`` tokens, as
``llama-perplexity --kl-divergence`` does: each window is scored from an empty
cache (its first token replaced by BOS when the tokenizer adds one), and only
the second half is counted: the logits at positions ctx/2 … ctx−2 predict the
tokens at ctx/2+1 … ctx−1, so each window gives ctx − 1 − ctx/2 positions.
The reference is scored once per window and shared by every compared model.

Statistics and their uncertainties follow llama.cpp's definitions
(``llama_stats``); on top of them qdesk reports flips (top-1 differs from the
reference's) by the reference's top-1/top-2 margin.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from qdesk.core.chat.backends import LogitsBackend
from qdesk.core.compare.llama_stats import (
    covariance_of_means,
    mean_and_uncertainty,
    median,
    percentile,
    position_stats,
    share_and_uncertainty,
)
from qdesk.core.errors import BadInput, Cancelled

MARGIN_BINS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)

KLD_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("Maximum", 1.0), ("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9),
    ("Median", 0.5), ("10.0%", 0.1), ("5.0%", 0.05), ("1.0%", 0.01), ("0.1%", 0.001),
    ("Minimum", 0.0),
)
DP_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("Maximum", 1.0), ("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.9),
    ("75.0%", 0.75), ("Median", 0.5), ("25.0%", 0.25), ("10.0%", 0.1), ("5.0%", 0.05),
    ("1.0%", 0.01), ("0.1%", 0.001), ("Minimum", 0.0),
)


@dataclass(frozen=True)
class FlipBin:
    """Positions whose reference margin lies in [lo, hi) ([lo, 1] for the last)."""

    lo: float
    hi: float
    tokens: int
    flips: int

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.tokens if self.tokens else None

    def to_json(self) -> dict:
        return {**asdict(self), "flip_rate": self.flip_rate}


@dataclass(frozen=True)
class DivergenceReport:
    """One model against the reference. Probabilities and Δp are fractions
    (llama.cpp prints them ×100 as %); KLD and ln PPL in nats.

    *_unc: llama.cpp's uncertainty (one standard error). Percentiles are
    (label, value) pairs in llama.cpp's order, largest first.
    """

    model: str
    reference: str
    ctx: int
    windows: int
    tokens: int  # scored positions
    ppl_q: float
    ppl_q_unc: float
    ppl_base: float
    ppl_base_unc: float
    cor_ln_ppl: float  # Cor(ln PPL(Q), ln PPL(base)), a fraction
    ln_ppl_ratio: float
    ln_ppl_ratio_unc: float
    ppl_ratio: float
    ppl_ratio_unc: float
    ppl_diff: float
    ppl_diff_unc: float
    mean_kld: float
    mean_kld_unc: float
    kld_percentiles: tuple[tuple[str, float], ...]
    mean_dp: float
    mean_dp_unc: float
    dp_percentiles: tuple[tuple[str, float], ...]
    rms_dp: float
    rms_dp_unc: float
    same_top_p: float
    same_top_p_unc: float
    flips: int
    flip_bins: tuple[FlipBin, ...]
    min_flip_margin: float | None  # smallest reference margin at which a flip happened
    median_flip_margin: float | None  # half of all flips happened below this margin
    seconds: float = 0.0

    def kld(self, label: str) -> float:
        return dict(self.kld_percentiles)[label]

    def dp(self, label: str) -> float:
        return dict(self.dp_percentiles)[label]

    def to_json(self) -> dict:
        d = asdict(self)
        d["kld_percentiles"] = dict(self.kld_percentiles)
        d["dp_percentiles"] = dict(self.dp_percentiles)
        d["flip_bins"] = [b.to_json() for b in self.flip_bins]
        return d


def summarize(
    stats: dict[str, np.ndarray], *, model: str = "", reference: str = "", ctx: int = 0,
    windows: int = 0, seconds: float = 0.0,
) -> DivergenceReport:
    """The report from per-position arrays (``llama_stats.position_stats``)."""
    n = int(stats["kld"].size)
    if n < 1:
        raise BadInput("no positions were scored")
    nll_q, nll_b = stats["nll_q"], stats["nll_base"]
    lq, lq_unc = mean_and_uncertainty(nll_q)
    lb, lb_unc = mean_and_uncertainty(nll_b)
    cov = covariance_of_means(nll_q, nll_b)
    ppl_q, ppl_b = math.exp(lq), math.exp(lb)
    ratio = lq - lb
    ratio_unc = math.sqrt(max(lq_unc**2 + lb_unc**2 - 2.0 * cov, 0.0))
    ppl_q_unc, ppl_b_unc = ppl_q * lq_unc, ppl_b * lb_unc
    ppl_diff_unc = math.sqrt(max(ppl_q_unc**2 + ppl_b_unc**2 - 2.0 * ppl_q * ppl_b * cov, 0.0))
    cor = cov / (lq_unc * lb_unc) if lq_unc > 0 and lb_unc > 0 else float("nan")

    kld_sorted = np.sort(stats["kld"])
    dp = stats["p_diff"]
    dp_sorted = np.sort(dp)
    mse, mse_unc = mean_and_uncertainty(dp * dp)
    rms = math.sqrt(mse)
    same, same_unc = share_and_uncertainty(int(stats["same_top"].sum()), n)

    flipped = ~stats["same_top"]
    margins = stats["base_margin"]
    bins = []
    for i, (lo, hi) in enumerate(zip(MARGIN_BINS[:-1], MARGIN_BINS[1:])):
        last = i == len(MARGIN_BINS) - 2
        inside = (margins >= lo) & ((margins <= hi) if last else (margins < hi))
        bins.append(FlipBin(lo, hi, int(inside.sum()), int((inside & flipped).sum())))
    flip_margins = np.sort(margins[flipped])

    def pct(sorted_v, label, fraction):
        return median(sorted_v) if label == "Median" else percentile(sorted_v, fraction)

    return DivergenceReport(
        model=model, reference=reference, ctx=ctx, windows=windows, tokens=n,
        ppl_q=ppl_q, ppl_q_unc=ppl_q_unc, ppl_base=ppl_b, ppl_base_unc=ppl_b_unc,
        cor_ln_ppl=cor, ln_ppl_ratio=ratio, ln_ppl_ratio_unc=ratio_unc,
        ppl_ratio=math.exp(ratio), ppl_ratio_unc=math.exp(ratio) * ratio_unc,
        ppl_diff=ppl_q - ppl_b, ppl_diff_unc=ppl_diff_unc,
        mean_kld=mean_and_uncertainty(stats["kld"])[0],
        mean_kld_unc=mean_and_uncertainty(stats["kld"])[1],
        kld_percentiles=tuple((lab, pct(kld_sorted, lab, f)) for lab, f in KLD_PERCENTILES),
        mean_dp=mean_and_uncertainty(dp)[0], mean_dp_unc=mean_and_uncertainty(dp)[1],
        dp_percentiles=tuple((lab, pct(dp_sorted, lab, f)) for lab, f in DP_PERCENTILES),
        rms_dp=rms, rms_dp_unc=(0.5 / rms * mse_unc if rms > 0 else 0.0),
        same_top_p=same, same_top_p_unc=same_unc,
        flips=int(flipped.sum()), flip_bins=tuple(bins),
        min_flip_margin=float(flip_margins[0]) if flip_margins.size else None,
        median_flip_margin=median(flip_margins) if flip_margins.size else None,
        seconds=seconds,
    )


def count_windows(n_tokens: int, ctx: int, chunks: int | None = None) -> int:
    if ctx < 4:
        raise BadInput(f"--ctx must be at least 4, got {ctx}")
    if chunks is not None and chunks < 1:
        raise BadInput(f"--chunks must be at least 1, got {chunks}")
    n = n_tokens // ctx
    if n < 1:
        raise BadInput(
            f"the text has {n_tokens} tokens, shorter than one window of {ctx}; "
            "give a longer text or a smaller --ctx"
        )
    return n if chunks is None else min(n, chunks)


@dataclass(frozen=True)
class WindowScored:
    """Progress: window ``index`` (0-based) of ``total`` is scored for every model."""

    index: int
    total: int
    seconds: float


@dataclass(frozen=True)
class DivergenceDone:
    reports: tuple[DivergenceReport, ...]

    def to_json(self) -> dict:
        return {"reports": [r.to_json() for r in self.reports]}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def divergence_steps(
    reference: LogitsBackend,
    models: Sequence[LogitsBackend],
    token_ids: Sequence[int],
    ctx: int = 512,
    chunks: int | None = None,
    bos_id: int | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[WindowScored | DivergenceDone]:
    """Score every window on the reference and each model; yield one
    ``WindowScored`` per window (the cancel point), then ``DivergenceDone``.

    token_ids: the whole text, tokenized once by the reference's tokenizer.
    bos_id: put in place of each window's first token (llama.cpp does this when
    the vocabulary adds BOS); None leaves the text's own token there.
    """
    if not models:
        raise BadInput("nothing to compare: give at least one model besides the reference")
    ids = np.asarray(token_ids, dtype=np.int64)
    total = count_windows(ids.size, ctx, chunks)
    for b in [reference, *models]:
        if ctx > b.n_ctx:
            raise BadInput(f"--ctx {ctx} is longer than {b.name}'s context ({b.n_ctx})")
    first = ctx // 2
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in models]
    seconds = [0.0 for _ in models]
    t0 = time.perf_counter()
    for w in range(total):
        if cancel is not None and cancel.is_set():
            raise Cancelled("comparison cancelled")
        window = ids[w * ctx : (w + 1) * ctx].copy()
        if bos_id is not None:
            window[0] = bos_id
        targets = window[first + 1 :]
        base = reference.score(window.tolist())[first : ctx - 1]
        for m, backend in enumerate(models):
            t = time.perf_counter()
            q = backend.score(window.tolist())[first : ctx - 1]
            if q.shape[1] != base.shape[1]:
                raise BadInput(
                    f"{backend.name} has {q.shape[1]} logits per token and {reference.name} "
                    f"{base.shape[1]}: different vocabularies cannot be compared"
                )
            parts[m].append(position_stats(base, q, targets))
            seconds[m] += time.perf_counter() - t
        yield WindowScored(w, total, time.perf_counter() - t0)
    yield DivergenceDone(
        tuple(
            summarize(
                _concat(p), model=b.name, reference=reference.name, ctx=ctx, windows=total,
                seconds=s,
            )
            for p, b, s in zip(parts, models, seconds)
        )
    )


def divergence_report(
    reference: LogitsBackend,
    model: LogitsBackend,
    token_ids: Sequence[int],
    ctx: int = 512,
    chunks: int | None = None,
    cancel: threading.Event | None = None,
    bos_id: int | None = None,
) -> DivergenceReport:
    """``model`` against ``reference`` on ``token_ids`` (see ``divergence_steps``)."""
    for event in divergence_steps(reference, [model], token_ids, ctx, chunks, bos_id, cancel):
        if isinstance(event, DivergenceDone):
            return event.reports[0]
    raise AssertionError("divergence_steps ended without a result")
