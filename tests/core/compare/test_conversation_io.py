"""Conversations saved and loaded (every statistic round-trips; bad files are
one BadInput line), Markdown export, and branching on the real demo model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import BigramBackend, random_table

from qdesk.core.chat.events import SamplingConfig
from qdesk.core.compare.conversation_io import (
    SavedConversation,
    conversation_markdown,
    conversation_to_json,
    load_conversation,
    save_conversation,
)
from qdesk.core.compare.live import ComparedSession
from qdesk.core.errors import BadInput

V = 24
MODELS = ({"name": "ref", "backend": "fake"}, {"name": "q", "backend": "fake",
                                                "quantization": {"method": "rtn", "bits": 4}})


def _saved_session():
    t = random_table(V, 21)
    noisy = t + np.random.default_rng(22).normal(0, 2.5, t.shape).astype(np.float32)
    s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(noisy, "q")],
                        SamplingConfig(max_new_tokens=12, stats_top_k=8), system="be brief")
    list(s.send("abc"))
    first = s.transcript.last.panes[1].current
    list(s.branch(1, 3, first.tokens[3].top_ids[1]))
    list(s.send("de"))
    return SavedConversation(s.transcript, s.sampling, MODELS)


def test_save_and_load_round_trip_every_statistic(tmp_path):
    saved = _saved_session()
    path = tmp_path / "chat.json"
    save_conversation(path, saved)
    loaded = load_conversation(path)
    assert json.dumps(conversation_to_json(loaded)) == json.dumps(conversation_to_json(saved))
    a, b = saved.transcript, loaded.transcript
    assert b.system == "be brief" and loaded.sampling == saved.sampling
    assert loaded.models == MODELS
    pa, pb = a.turns[0].panes[1], b.turns[0].panes[1]
    assert pb.active == pa.active == 1 and len(pb.branches) == 2
    for x, y in zip(pa.branches, pb.branches):
        assert y.tokens == x.tokens  # TokenEvent: ids, top-k, margin, entropy, p …
        assert y.agreements == x.agreements  # ref top-1, flip, KLD, Δp
        assert y.ref_top == x.ref_top
        assert y.reply == x.reply and y.summary == x.summary
        assert (y.kind, y.parent, y.point, y.prompt_ids) == (x.kind, x.parent, x.point, x.prompt_ids)
        assert y.reverse.mean_kld == x.reverse.mean_kld
        assert y.reverse.flip_bins == x.reverse.flip_bins
        assert y.reverse.kld_percentiles == x.reverse.kld_percentiles
    assert not list(tmp_path.glob(".chat.json.*"))  # no temporary left behind


def test_a_loaded_conversation_continues(tmp_path):
    saved = _saved_session()
    save_conversation(tmp_path / "c.json", saved)
    loaded = load_conversation(tmp_path / "c.json")
    t = random_table(V, 21)
    s = ComparedSession(BigramBackend(t, "ref"), [BigramBackend(t, "q")],
                        loaded.sampling, transcript=loaded.transcript)
    list(s.send("more"))
    assert len(s.transcript.turns) == 3
    assert s.transcript.history(1)[1].content == saved.transcript.turns[0].panes[1].current.text


def _doc():
    return conversation_to_json(_saved_session())


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d.update(format="something"), "not a qdesk conversation"),
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(panes="two"), "panes: expected a whole number"),
    (lambda d: d["turns"][0]["panes"][1]["branches"][0]["tokens"][2].update(margin="x"),
     r"turns\[0\].panes\[1\].branches\[0\].tokens\[2\].margin: expected a number"),
    (lambda d: d["turns"][0]["panes"][1]["branches"][0]["tokens"][2].update(p_token=7.0),
     "is not a probability"),
    (lambda d: d["turns"][0]["panes"][1]["branches"][1].update(parent=5), "earlier branch"),
    (lambda d: d["turns"][0]["panes"][1].update(active=9), "names no branch"),
    (lambda d: d["turns"][0]["panes"].pop(), "1 panes, expected 2"),
    (lambda d: d["turns"][0]["panes"][1]["branches"][0]["tokens"][0]["agreement"].pop("kld"),
     "agreement.kld: missing"),
    (lambda d: d["sampling"].update(temperature=-1), "temperature must be >= 0"),
    (lambda d: d["turns"][0]["panes"][1]["branches"][0]["tokens"].pop(),
     "token_ids: differ from the tokens"),
])
def test_bad_conversation_files_are_one_clear_error(tmp_path, break_it, message):
    doc = _doc()
    break_it(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), "utf-8")
    with pytest.raises(BadInput, match=message):
        load_conversation(path)


def test_not_json_and_not_text(tmp_path):
    (tmp_path / "a.json").write_text("{ nope", "utf-8")
    with pytest.raises(BadInput, match="not JSON"):
        load_conversation(tmp_path / "a.json")
    (tmp_path / "b.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match="cannot read"):
        load_conversation(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[1, 2]", "utf-8")
    with pytest.raises(BadInput, match="expected an object"):
        load_conversation(tmp_path / "c.json")
    with pytest.raises(BadInput, match="cannot read"):
        load_conversation(tmp_path / "missing.json")


def test_markdown_has_the_turns_replies_and_figures():
    saved = _saved_session()
    md = conversation_markdown(saved)
    t = saved.transcript
    assert "**User:** abc" in md and "**User:** de" in md
    assert "System prompt: be brief" in md
    assert "### ref (reference)" in md and "### q" in md
    assert t.turns[0].panes[1].current.text.strip() in md
    s = t.turns[0].panes[1].current.summary
    assert f"{s.flips} flips" in md and f"mean KLD {s.mean_kld:.4f}" in md
    assert "Version 2 of 2: continued from another token at token 3" in md
    assert "rtn" in md and "bits 4" in md


@pytest.mark.slow
def test_follow_the_reference_on_the_demo_flip(demo_hf, demo_gguf):
    """The shipped Q4_1 file flips the first token of the France answer;
    following the reference there gives the reference's token, then the
    quantized model's own continuation, with agreement all the way."""
    s = ComparedSession(demo_hf.backend, [demo_gguf.backend], SamplingConfig(max_new_tokens=8))
    try:
        list(s.send("What is the capital of France?"))
        pane = s.transcript.last.panes[1]
        first = pane.current
        ref_reply = s.transcript.last.panes[0].current
        assert first.agreements[0].flip and first.token_ids[0] != ref_reply.token_ids[0]
        list(s.follow_reference(1, 0))
        new = pane.current
        assert new.token_ids[0] == first.agreements[0].ref_top_id == ref_reply.token_ids[0]
        assert all(a is not None for a in new.agreements) and len(new.agreements) == len(new.tokens)
        assert new.text.startswith("The capital of France")
        # a later branch keeps everything before its point
        i = 3
        alt = new.tokens[i].top_ids[1]
        list(s.branch(1, i, alt))
        later = pane.current
        assert later.token_ids[:i] == new.token_ids[:i] and later.token_ids[i] == alt
        assert later.agreements[:i] == new.agreements[:i]
        assert len(pane.branches) == 3
    finally:
        s.close_scorers()
