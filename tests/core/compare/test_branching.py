"""Branches, turns, failures and Stop in a compared chat, checked with bigram fakes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import BigramBackend, random_table

from qdesk.core.chat.events import ReplyDone, SamplingConfig
from qdesk.core.chat.generate import generate_steps
from qdesk.core.chat.session import ChatSession, PaneFailed
from qdesk.core.compare.agreement import agreement
from qdesk.core.compare.live import ComparedDone, ComparedSession, ComparedToken, PaneNotice
from qdesk.core.errors import BadInput

V = 24


def _tables(seed=11, noise=2.5):
    t = random_table(V, seed)
    noisy = t + np.random.default_rng(seed + 1).normal(0, noise, t.shape).astype(np.float32)
    return t, noisy


def _session(n_tokens=14, **kw):
    t, noisy = _tables()
    ref, pane = BigramBackend(t, "ref"), BigramBackend(noisy, "q")
    s = ComparedSession(ref, [pane], SamplingConfig(max_new_tokens=n_tokens), **kw)
    return s, t, noisy


def _tokens(events, pane):
    return [e for e in events if isinstance(e, ComparedToken) and e.pane == pane]


def _check_agreement_is_teacher_forced(branch, prompt_ids, t, noisy):
    seq = list(prompt_ids) + branch.token_ids
    for k, (tok, a, top) in enumerate(zip(branch.tokens, branch.agreements, branch.ref_top)):
        last = seq[len(prompt_ids) + k - 1]  # the bigram's prefix is its last token
        want = agreement(t[last], noisy[last], tok.token_id)
        assert a.kld == pytest.approx(want.kld, rel=1e-6, abs=1e-9)
        assert a.flip == want.flip and a.ref_top_id == want.ref_top_id
        assert a.dp == pytest.approx(want.dp, abs=1e-7)
        assert top.top_ids[0] == a.ref_top_id
        assert top.margin == pytest.approx(a.ref_margin, abs=1e-6)


def test_continue_from_another_token_keeps_the_prefix_and_its_agreement():
    s, t, noisy = _session()
    list(s.send("abc"))
    turn = s.transcript.last
    first = turn.panes[1].current
    i = 4
    alt = first.tokens[i].top_ids[1]  # the model's runner-up there
    events = list(s.branch(1, i, alt))
    new = turn.panes[1].current
    assert turn.panes[1].active == 1 and len(turn.panes[1].branches) == 2
    assert new.parent == 0 and new.point == i and new.kind == "alternative"
    assert new.token_ids[:i] == first.token_ids[:i] and new.token_ids[i] == alt
    assert new.agreements[:i] == first.agreements[:i]  # kept, not recomputed
    assert [e.event.index for e in _tokens(events, 1)] == list(range(i, len(new.tokens)))
    assert not _tokens(events, 0)  # only the branched pane runs
    _check_agreement_is_teacher_forced(new, new.prompt_ids, t, noisy)
    done = [e for e in events if isinstance(e, ComparedDone)]
    assert len(done) == 1 and done[0].summary.tokens == len(new.tokens)
    assert list(done[0].reply.token_ids) == new.token_ids
    assert done[0].reply.text == "".join(x.text for x in new.tokens)
    assert new.reverse is not None  # the reference's reply scored under the pane again
    # the continuation is what the model says after that prefix
    direct = list(generate_steps(BigramBackend(noisy), new.prompt_ids, s.sampling,
                                 prefix=new.token_ids[:i], force=alt))
    assert list(direct[-1].token_ids) == new.token_ids
    # branches are kept and switchable
    s.select_branch(1, 0)
    assert turn.panes[1].current is first
    assert s.transcript.history(1)[-1].content == first.text


def test_follow_the_reference_at_a_flip():
    s, t, noisy = _session(n_tokens=20)
    list(s.send("abc"))
    turn = s.transcript.last
    first = turn.panes[1].current
    flips = [k for k, (tok, a) in enumerate(zip(first.tokens, first.agreements))
             if a.ref_top_id != tok.token_id]
    assert flips, "the fake should part from the reference somewhere"
    i = flips[0]
    list(s.follow_reference(1, i))
    new = turn.panes[1].current
    assert new.kind == "follow"
    assert new.token_ids[:i] == first.token_ids[:i]
    assert new.token_ids[i] == first.agreements[i].ref_top_id
    _check_agreement_is_teacher_forced(new, new.prompt_ids, t, noisy)
    with pytest.raises(BadInput, match="already took"):
        s.reference_choice(1, i)  # the new branch has the reference's token there


def test_branch_of_the_reference_pane_and_bad_branches():
    s, _, _ = _session()
    with pytest.raises(BadInput, match="nothing has been said"):
        s.session.start_branch(0, 0, 3)
    list(s.send("abc"))
    ref_first = s.transcript.last.panes[0].current
    alt = ref_first.tokens[2].top_ids[1]
    events = list(s.branch(0, 2, alt))
    assert s.transcript.last.panes[0].current.token_ids[2] == alt
    assert all(e.agreement is None for e in _tokens(events, 0))
    with pytest.raises(BadInput, match="no token 99"):
        s.session.start_branch(1, 99, 3)
    with pytest.raises(BadInput, match="already has there"):
        pane = s.transcript.last.panes[1].current
        s.session.start_branch(1, 0, pane.tokens[0].token_id)


def test_turns_regenerate_and_new_chat():
    s, _, _ = _session(n_tokens=6)
    list(s.send("abc"))
    list(s.send("de"))
    assert len(s.transcript.turns) == 2
    hist = s.transcript.history(1)
    assert [m.role for m in hist] == ["user", "assistant"] * 2
    assert hist[2].content == "de"
    before = s.transcript.last.panes[1].current
    list(s.regenerate())
    pt = s.transcript.last.panes[1]
    assert len(pt.branches) == 2 and pt.active == 1 and pt.current.kind == "regenerated"
    assert pt.current.seed == s.sampling.seed + 1
    assert pt.current.token_ids == before.token_ids  # greedy: the same reply
    assert len(s.transcript.turns) == 2
    s.new_chat()
    assert s.transcript.turns == []


class _Failing(BigramBackend):
    """Fails on its ``after``-th forward (a model that breaks mid-reply)."""

    def __init__(self, table, after, name="broken"):
        super().__init__(table, name)
        self.after = after

    def _forward(self, ids):
        if self.forward_calls >= self.after:
            raise RuntimeError("the device went away")
        return super()._forward(ids)


def test_a_failing_pane_does_not_stop_the_others():
    t, noisy = _tables()
    s = ComparedSession(BigramBackend(t, "ref"), [_Failing(noisy, 3), BigramBackend(noisy, "q2")],
                        SamplingConfig(max_new_tokens=10))
    events = list(s.send("abc"))
    failed = [e for e in events if isinstance(e, PaneFailed)]
    assert [(e.pane, e.message) for e in failed] == [(1, "RuntimeError: the device went away")]
    done = {e.pane for e in events if isinstance(e, ComparedDone)}
    assert done == {0, 2}
    broken = s.transcript.last.panes[1].current
    assert broken.error == "RuntimeError: the device went away" and broken.reply is None
    assert len(broken.tokens) == 3
    assert s.transcript.last.panes[2].current.reply.n_tokens == 10


def test_a_pane_detached_mid_reply_reports_why_and_the_reference_goes_on():
    s, _, _ = _session(n_tokens=12)
    seen = []
    for e in s.send("abc"):
        seen.append(e)
        if isinstance(e, ComparedToken) and e.pane == 1 and e.event.index == 2:
            s.detach(1, "the model was unloaded")
    failed = [e for e in seen if isinstance(e, PaneFailed)]
    assert [(e.pane, e.message) for e in failed] == [(1, "the model was unloaded")]
    assert len(_tokens(seen, 1)) == 3
    assert any(isinstance(e, ComparedDone) and e.pane == 0 for e in seen)
    with pytest.raises(BadInput, match="unloaded"):
        s.session.start_branch(1, 0, 5)
    # the next turn runs without it
    events = list(s.send("more"))
    assert {e.pane for e in events if isinstance(e, ComparedDone)} == {0}


def test_unloading_the_reference_ends_agreement_but_not_the_panes():
    s, _, _ = _session(n_tokens=12)
    seen = []
    for e in s.send("abc"):
        seen.append(e)
        if isinstance(e, ComparedToken) and e.pane == 1 and e.event.index == 3:
            s.detach(0, "the reference was unloaded")
    assert any(isinstance(e, PaneNotice) and e.pane == 1 and "unloaded" in e.message for e in seen)
    pane = s.transcript.last.panes[1].current
    assert pane.reply.n_tokens == 12
    assert pane.agreements[0] is not None and pane.agreements[-1] is None


class _BrokenScorer(BigramBackend):
    def fork(self):
        return _Failing(self.table, 2, "scorer")


def test_a_failing_scorer_only_ends_that_panes_agreement():
    t, noisy = _tables()
    s = ComparedSession(_BrokenScorer(t, "ref"), [BigramBackend(noisy, "q")],
                        SamplingConfig(max_new_tokens=10), overlap=False)
    events = list(s.send("abc"))
    notes = [e for e in events if isinstance(e, PaneNotice)]
    assert notes and "agreement with the reference stopped" in notes[0].message
    pane = s.transcript.last.panes[1].current
    assert pane.reply.n_tokens == 10 and pane.agreements[-1] is None


def test_stop_ends_every_pane_within_one_token():
    t, noisy = _tables()
    s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(noisy, "a"), BigramBackend(t, "b")],
                        SamplingConfig(max_new_tokens=200))
    cancel = threading.Event()
    counts = {0: 0, 1: 0, 2: 0}
    after = None
    for e in s.send("abc", cancel):
        if isinstance(e, ComparedToken):
            counts[e.pane] += 1
            if e.pane == 2 and counts[2] == 3:
                cancel.set()
                after = dict(counts)
    done = [e for e in s.transcript.last.panes]
    for pane, pt in enumerate(done):
        assert pt.current.reply.finish_reason in ("cancelled", "end")
        assert counts[pane] - after[pane] <= 1


def test_plain_session_keeps_its_old_api():
    t, _ = _tables()
    s = ChatSession([BigramBackend(t, "a")], SamplingConfig(max_new_tokens=4))
    events = list(s.send("abc"))
    assert isinstance(events[-1].reply, ReplyDone)
    assert s.conversations[0].turns[1].content == events[-1].reply.text
