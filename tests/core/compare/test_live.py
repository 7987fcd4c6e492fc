"""Live agreement during a side-by-side chat, checked with bigram fakes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import BigramBackend, random_table

from qdesk.core.chat.events import SamplingConfig
from qdesk.core.compare.agreement import agreement
from qdesk.core.compare.live import (
    ComparedDone,
    ComparedSession,
    ComparedToken,
    PaneNotice,
    ReverseScored,
)
from qdesk.core.errors import BadInput

V = 24


def _run(session, prompt="abc"):
    events = list(session.send(prompt))
    tokens = {}
    for e in events:
        if isinstance(e, ComparedToken):
            tokens.setdefault(e.pane, []).append(e)
    done = {e.pane: e for e in events if isinstance(e, ComparedDone)}
    return events, tokens, done


def test_identical_pane_agrees_everywhere():
    t = random_table(V, 0)
    s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(t, "same")],
                        SamplingConfig(max_new_tokens=10))
    events, tokens, done = _run(s)
    assert all(e.agreement is None for e in tokens[0])
    ag = [e.agreement for e in tokens[1]]
    assert len(ag) == done[1].reply.n_tokens > 0
    assert all(a.kld == 0.0 and not a.flip and a.dp == 0.0 for a in ag)
    summary = done[1].summary
    assert summary.flips == 0 and summary.first_divergence is None and summary.mean_kld == 0.0
    rev = [e for e in events if isinstance(e, ReverseScored)]
    assert len(rev) == 1 and rev[0].report.mean_kld == 0.0 and rev[0].report.same_top_p == 1.0


def test_agreement_matches_teacher_forcing_on_the_panes_own_prefix():
    t = random_table(V, 1)
    noisy = t + np.random.default_rng(2).normal(0, 2.0, t.shape).astype(np.float32)
    ref = BigramBackend(t, "ref")
    s = ComparedSession(ref, [BigramBackend(noisy, "q")], SamplingConfig(max_new_tokens=12))
    events, tokens, done = _run(s)
    prompt = s.session.conversations[1].turns[0].content
    assert prompt == "abc"
    prompt_ids = list(done[1].prompt_ids)
    reply = list(done[1].reply.token_ids)
    seq = prompt_ids + reply
    for k, e in enumerate(tokens[1]):
        last = seq[len(prompt_ids) + k - 1]  # the bigram's prefix is its last token
        want = agreement(t[last], noisy[last], e.event.token_id)
        assert e.agreement.kld == pytest.approx(want.kld, rel=1e-6, abs=1e-9)
        assert e.agreement.flip == want.flip
        assert e.agreement.ref_top_id == int(np.argmax(t[last]))
        assert e.agreement.dp == pytest.approx(want.dp, abs=1e-7)
        # the direct definition of KL(ref || pane)
        p = np.exp(t[last] - t[last].max())
        p /= p.sum()
        q = np.exp(noisy[last] - noisy[last].max())
        q /= q.sum()
        assert e.agreement.kld == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-4)
    flips = [e.agreement.flip for e in tokens[1]]
    assert done[1].summary.flips == sum(flips)
    assert done[1].summary.tokens == len(reply)


def test_scorer_costs_one_reference_step_per_token():
    t = random_table(V, 3)
    noisy = t + np.random.default_rng(4).normal(0, 3.0, t.shape).astype(np.float32)
    s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(noisy, "q")],
                        SamplingConfig(max_new_tokens=15), reverse=False)
    scorer = s._scorers[1]
    _, tokens, done = _run(s)
    n = done[1].reply.n_tokens
    assert scorer.forward_calls <= n  # one prefill/feed per token at most


def test_other_vocabulary_and_missing_reference_leave_panes_running():
    t = random_table(V, 5)
    other = BigramBackend(random_table(V, 6), "other", tag="w")
    s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(t, "q"), other],
                        SamplingConfig(max_new_tokens=5))
    events, tokens, done = _run(s)
    notices = [e for e in events if isinstance(e, PaneNotice)]
    assert len(notices) == 1 and notices[0].pane == 2 and "vocabular" in notices[0].message
    assert all(e.agreement is None for e in tokens[2]) and done[2].summary is None
    assert all(e.agreement is not None for e in tokens[1])

    s = ComparedSession(None, [BigramBackend(t, "q")], SamplingConfig(max_new_tokens=5),
                        reference_error="file not found")
    events, tokens, done = _run(s)
    assert isinstance(events[0], PaneNotice) and "file not found" in events[0].message
    assert set(tokens) == {1} and done[1].summary is None and done[1].reply.n_tokens > 0


def test_same_backend_twice_is_refused():
    b = BigramBackend(random_table(V, 7))
    with pytest.raises(BadInput):
        ComparedSession(b, [b])


@pytest.mark.parametrize("reuse", [True, False])
def test_overlapped_scorer_gives_the_same_figures(reuse):
    t = random_table(V, 8)
    noisy = t + np.random.default_rng(9).normal(0, 2.0, t.shape).astype(np.float32)
    runs = []
    for overlap in (False, True):
        s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(noisy, "q")],
                            SamplingConfig(max_new_tokens=20), overlap=overlap,
                            reuse_reference=reuse)
        _, tokens, _ = _run(s)
        runs.append([e.agreement for e in tokens[1]])
        # the scorer threads end with the reply (an idle one would keep an
        # OpenMP team that throttles every other: qdesk.core.threads)
        assert not [t for t in threading.enumerate() if t.name.startswith("qdesk-scorer")]
        s.close_scorers()
    assert runs[0] == runs[1] and len(runs[0]) > 0
