"""divergence_report against direct computations with bigram fakes."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from fakes import BigramBackend, random_table

from qdesk.core.compare.divergence import (
    DivergenceDone,
    WindowScored,
    divergence_report,
    divergence_steps,
)
from qdesk.core.errors import BadInput, Cancelled

V = 16


@pytest.fixture
def pair():
    t = random_table(V, 0)
    noisy = t + np.random.default_rng(1).normal(0, 1.0, t.shape).astype(np.float32)
    return BigramBackend(t, "base"), BigramBackend(noisy, "q")


def _ids(n, seed=2):
    return np.random.default_rng(seed).integers(0, V, n).tolist()


def test_identical_models_agree_completely(pair):
    base, _ = pair
    r = divergence_report(base, BigramBackend(base.table, "same"), _ids(400), ctx=32)
    assert r.mean_kld == 0.0 and r.kld("Maximum") == 0.0
    assert r.same_top_p == 1.0 and r.same_top_p_unc == 0.0
    assert r.ppl_q == r.ppl_base and r.ln_ppl_ratio == 0.0
    assert r.rms_dp == 0.0 and r.flips == 0 and r.min_flip_margin is None
    assert r.cor_ln_ppl == pytest.approx(1.0)


def test_windows_score_their_second_half_like_llama_perplexity(pair):
    base, q = pair
    ids = _ids(1000)
    ctx = 64
    r = divergence_report(base, q, ids, ctx=ctx)
    windows = len(ids) // ctx  # 15; the tail is left out
    assert r.windows == windows and r.tokens == windows * (ctx - 1 - ctx // 2)
    # Direct: positions ctx/2 … ctx−2 of each window predict the next token.
    nll_q, nll_b, kld, same = [], [], [], []
    for w in range(windows):
        win = ids[w * ctx : (w + 1) * ctx]
        for j in range(ctx // 2, ctx - 1):
            lb = base.table[win[j]].astype(np.float64)
            lq = q.table[win[j]].astype(np.float64)
            lb = lb - np.log(np.exp(lb).sum())
            lq = lq - np.log(np.exp(lq).sum())
            nll_b.append(-lb[win[j + 1]])
            nll_q.append(-lq[win[j + 1]])
            kld.append(float(np.sum(np.exp(lb) * (lb - lq) * (lb > -16))))
            same.append(np.argmax(lb) == np.argmax(lq))
    n = len(kld)
    assert r.ppl_q == pytest.approx(math.exp(np.mean(nll_q)), rel=1e-9)
    assert r.ppl_base == pytest.approx(math.exp(np.mean(nll_b)), rel=1e-9)
    assert r.mean_kld == pytest.approx(np.mean(kld), rel=1e-9)
    assert r.mean_kld_unc == pytest.approx(np.std(kld) / math.sqrt(n - 1), rel=1e-6)
    assert r.same_top_p == pytest.approx(np.mean(same))
    d = np.array(nll_q) - np.array(nll_b)
    # var(a − b) = var a + var b − 2 cov: the ratio's uncertainty is that of the difference
    assert r.ln_ppl_ratio_unc == pytest.approx(np.std(d) / math.sqrt(n - 1), rel=1e-6)
    assert r.cor_ln_ppl == pytest.approx(np.corrcoef(nll_q, nll_b)[0, 1], rel=1e-6)
    assert r.kld("Median") == pytest.approx(np.median(kld), rel=1e-9)
    assert r.kld("99.0%") == pytest.approx(np.percentile(kld, 99), rel=1e-9)


def test_flip_bins_count_every_position_once(pair):
    base, q = pair
    r = divergence_report(base, q, _ids(2000), ctx=100)
    assert sum(b.tokens for b in r.flip_bins) == r.tokens
    assert sum(b.flips for b in r.flip_bins) == r.flips == round(r.tokens * (1 - r.same_top_p))
    assert r.flips > 0
    assert 0 <= r.min_flip_margin <= r.median_flip_margin <= 1
    assert [b.lo for b in r.flip_bins] == [0, 0.05, 0.1, 0.2, 0.4, 0.7]
    json.dumps(r.to_json())  # every figure serializes


def test_each_window_starts_with_bos_when_asked(pair):
    base, q = pair
    seen = []

    class Recording(BigramBackend):
        def score(self, ids):
            seen.append(list(ids))
            return super().score(ids)

    ids = _ids(256)
    divergence_report(base, Recording(q.table), ids, ctx=64, bos_id=0)
    assert [w[0] for w in seen] == [0, 0, 0, 0]
    assert [w[1:] for w in seen] == [ids[k * 64 + 1 : (k + 1) * 64] for k in range(4)]


def test_progress_events_and_cancel(pair):
    base, q = pair
    events = list(divergence_steps(base, [q, BigramBackend(base.table)], _ids(300), ctx=50))
    assert [e.index for e in events if isinstance(e, WindowScored)] == list(range(6))
    assert isinstance(events[-1], DivergenceDone) and len(events[-1].reports) == 2
    assert events[-1].reports[1].mean_kld == 0.0
    cancel = threading.Event()
    steps = divergence_steps(base, [q], _ids(300), ctx=50, cancel=cancel)
    next(steps)
    cancel.set()
    with pytest.raises(Cancelled):
        next(steps)


def test_bad_input(pair):
    base, q = pair
    with pytest.raises(BadInput, match="shorter than one window"):
        divergence_report(base, q, _ids(100), ctx=128)
    other = BigramBackend(random_table(V + 1, 3), "other")
    with pytest.raises(BadInput, match="vocabularies"):
        divergence_report(base, other, _ids(100), ctx=32)
    with pytest.raises(BadInput, match="--chunks"):
        divergence_report(base, q, _ids(100), ctx=32, chunks=0)
