"""The comparison engine on the real demo model (dense BF16 vs its Q4_1 GGUF)."""

from __future__ import annotations

import json

import pytest

from qdesk.core.chat.events import SamplingConfig
from qdesk.core.compare.divergence import divergence_report
from qdesk.core.compare.live import ComparedDone, ComparedSession, ComparedToken, ReverseScored
from qdesk.core.compare.texts import encode_text, load_text


@pytest.fixture(scope="module")
def heldout_ids(demo_hf):
    ids, bos = encode_text(demo_hf.backend.tokenizer, load_text("heldout")[1])
    return ids, bos


def test_demo_against_itself_is_identical(demo_hf, heldout_ids):
    ids, bos = heldout_ids
    r = divergence_report(demo_hf.backend, demo_hf.backend.fork(), ids, ctx=64, chunks=2,
                          bos_id=bos)
    assert r.mean_kld == 0.0 and r.same_top_p == 1.0 and r.ppl_q == r.ppl_base


def test_demo_through_the_other_backend_is_close(demo_hf, demo_gguf, heldout_ids):
    ids, bos = heldout_ids
    r = divergence_report(demo_hf.backend, demo_gguf.backend, ids, ctx=128, chunks=2, bos_id=bos)
    assert r.tokens == 2 * 63
    # Same weights (the dense demo is the GGUF dequantized), other arithmetic.
    assert 0 < r.mean_kld < 0.02
    assert r.same_top_p > 0.85
    assert abs(r.ln_ppl_ratio) < 0.05
    assert r.cor_ln_ppl > 0.95


def test_live_agreement_sees_the_france_flip(demo_hf, demo_gguf):
    s = ComparedSession(demo_hf.backend, [demo_gguf.backend], SamplingConfig(max_new_tokens=4))
    events = list(s.send("What is the capital of France?"))
    pane = [e for e in events if isinstance(e, ComparedToken) and e.pane == 1]
    ref = [e for e in events if isinstance(e, ComparedToken) and e.pane == 0]
    first = pane[0].agreement
    assert first.flip and first.ref_margin < 0.1  # a near tie that quantization flips
    assert first.ref_top_id == ref[0].event.token_id  # the reference's own first token
    assert abs(first.ref_margin - ref[0].event.margin) < 1e-4
    done = {e.pane: e for e in events if isinstance(e, ComparedDone)}
    assert done[1].summary.first_divergence == 0 and done[1].summary.flips >= 1
    reverse = [e for e in events if isinstance(e, ReverseScored)]
    assert len(reverse) == 1 and reverse[0].report.tokens == done[0].reply.n_tokens
    json.dumps(reverse[0].report.to_json())


def test_live_agreement_of_the_same_weights(demo_hf):
    # Two fresh caches compute the same prefixes the same way: exactly zero.
    s = ComparedSession(demo_hf.backend.fork(), [demo_hf.backend.fork()],
                        SamplingConfig(max_new_tokens=3), reverse=False)
    events = list(s.send("Name a colour."))
    ag = [e.agreement for e in events if isinstance(e, ComparedToken) and e.pane == 1]
    assert ag and all(a.kld == 0.0 and not a.flip for a in ag)
    # A second turn on the reference (a reused KV cache) against a fresh pane: BF16
    # rounding differs between incremental and batched prefill, so KLD is small, not 0.
    s2 = ComparedSession(s.reference, [demo_hf.backend.fork()],
                         SamplingConfig(max_new_tokens=3), reverse=False)
    ag = [e.agreement for e in s2.send("Name a fruit.")
          if isinstance(e, ComparedToken) and e.pane == 1]
    assert ag and max(a.kld for a in ag) < 0.02


def test_a_reference_that_fails_to_load_leaves_the_panes_running(tmp_path):
    from qdesk.core.compare.live import PaneNotice, open_compared_session

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    session, loaded = open_compared_session(
        [str(broken), "demo"], ["llamacpp", "hf"], SamplingConfig(max_new_tokens=2)
    )
    try:
        events = list(session.send("Hello"))
        assert isinstance(events[0], PaneNotice) and "reference failed" in events[0].message
        done = [e for e in events if isinstance(e, ComparedDone)]
        assert [d.pane for d in done] == [1] and done[0].reply.n_tokens >= 1
        assert done[0].summary is None
    finally:
        for m in loaded:
            if m is not None:
                m.close()


def test_a_llama_cpp_reference_forks_into_its_own_cache(demo_gguf):
    fork = demo_gguf.backend.fork()
    try:
        ids = [1, 504, 3575, 282, 4649]
        assert (fork.prefill(ids) == demo_gguf.backend.score(ids)[-1]).mean() > 0.99
        assert fork.tokenizer.fingerprint() == demo_gguf.backend.tokenizer.fingerprint()
    finally:
        fork.close()


def _agreements(session, prompts):
    out = []
    for prompt in prompts:
        out.append([e for e in session.send(prompt) if isinstance(e, ComparedToken) and e.pane == 1])
    return out


def test_scorer_steps_batched_with_the_reference_give_the_same_figures(demo_hf32, demo_gguf):
    # Forced to score every token; the second turn's histories differ (the
    # panes answered differently), so the batch pads the shorter row.
    prompts = ["What is the capital of France?", "And of Italy?"]
    runs = {}
    for batch in (False, True):
        # llama.cpp's logits for a prefix depend on how it was fed (one prefill,
        # or a reused cache plus one token: top-1 p 0.143 vs 0.151 here), so
        # both runs start from empty caches.
        demo_hf32.backend.reset()
        demo_gguf.backend.reset()
        s = ComparedSession(demo_hf32.backend, [demo_gguf.backend], SamplingConfig(max_new_tokens=8),
                            reverse=False, reuse_reference=False, batch=batch)
        runs[batch] = (_agreements(s, prompts), s)
        s.close_scorers()
    assert runs[False][1].batched_steps == 0
    assert runs[True][1].batched_steps >= 2 * (8 - 1) - 2  # all but the turns' first tokens
    for alone, batched in zip(runs[False][0], runs[True][0]):
        assert [e.event.token_id for e in alone] == [e.event.token_id for e in batched]
        for a, b in zip(alone, batched):
            assert a.agreement.flip == b.agreement.flip
            assert a.agreement.ref_top_id == b.agreement.ref_top_id
            assert b.agreement.kld == pytest.approx(a.agreement.kld, rel=1e-2, abs=1e-4)
            assert b.agreement.ref_margin == pytest.approx(a.agreement.ref_margin, abs=1e-4)


def test_two_scorers_ride_along_in_one_batch(demo_hf32, demo_gguf):
    # Pane 2 holds the reference's own weights: its scorer, batched with the
    # reference pane and pane 1's scorer, must find (almost) nothing to report.
    same = demo_hf32.backend.fork()
    demo_gguf.backend.reset()
    s = ComparedSession(demo_hf32.backend, [demo_gguf.backend, same],
                        SamplingConfig(max_new_tokens=6), reverse=False, reuse_reference=False)
    events = list(s.send("What is the capital of France?"))
    s.close_scorers()
    assert s.batched_steps == 2 * (6 - 1)
    same_pane = [e.agreement for e in events if isinstance(e, ComparedToken) and e.pane == 2]
    assert len(same_pane) == 6
    assert all(not a.flip and a.kld < 1e-4 and abs(a.dp) < 1e-3 for a in same_pane)
    assert [e.agreement.flip for e in events if isinstance(e, ComparedToken) and e.pane == 1][0]
