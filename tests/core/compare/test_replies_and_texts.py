"""Reply-length statistics, prompt sets and texts."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import BigramBackend, random_table

from qdesk.core.chat.events import SamplingConfig
from qdesk.core.compare.replies import (
    Interval,
    LengthsDone,
    ReplyRecord,
    bootstrap_interval,
    final_number_matches,
    length_stats,
    reply_length_steps,
)
from qdesk.core.compare.texts import PROMPT_SETS, Prompt, load_prompts, load_text
from qdesk.core.errors import BadInput


def test_final_number_matching():
    assert final_number_matches("3 + 5 = 8, so the answer is 8.", "8")
    assert not final_number_matches("The answer is 8. Wait, 9.", "8")
    assert final_number_matches("共 1,200 元", "1200")
    assert not final_number_matches("no digits here", "3")


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_constants():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, (200, 1))
    iv = bootstrap_interval(x, lambda a: float(a.mean()), np.random.default_rng(1))
    se = 2 / np.sqrt(200)
    assert iv.lo < iv.value < iv.hi
    assert iv.hi - iv.lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    c = bootstrap_interval(np.full((5, 2), 3.0), lambda a: float(a.mean()), rng)
    assert c == Interval(3.0, 3.0, 3.0)


def test_length_stats_pair_each_prompt_with_the_reference():
    prompts = [Prompt("a", "1", "r"), Prompt("b", "2", "r"), Prompt("c", None, "k")]
    recs = []
    for p, (t0, t1) in enumerate([(10, 12), (20, 23), (30, 34)]):
        recs.append(ReplyRecord(0, p, 0, t0, False, None if p == 2 else True, ""))
        recs.append(ReplyRecord(1, p, 0, t1, p == 2, None if p == 2 else p == 0, ""))
    stats = {(s.model, s.category): s for s in length_stats(recs, ["ref", "q"], prompts)}
    q = stats[("q", "all")]
    assert q.mean_tokens.value == pytest.approx(23.0)
    assert q.median_tokens.value == 23.0
    assert q.diff_to_reference.value == pytest.approx(3.0)  # (2 + 3 + 4) / 3
    assert 2.0 <= q.diff_to_reference.lo <= 3.0 <= q.diff_to_reference.hi <= 4.0
    assert q.hit_limit_share == pytest.approx(1 / 3)
    assert q.accuracy.value == 0.5 and stats[("ref", "r")].accuracy.value == 1.0
    assert stats[("ref", "all")].diff_to_reference is None
    assert stats[("q", "k")].accuracy is None


def test_reply_length_steps_on_identical_models_gives_zero_difference():
    t = random_table(12, 5)
    a, b = BigramBackend(t, "a"), BigramBackend(t, "b")
    prompts = [Prompt("hello", None, "x"), Prompt("world", None, "x")]
    events = list(reply_length_steps([a, b], prompts, SamplingConfig(max_new_tokens=6)))
    done = events[-1]
    assert isinstance(done, LengthsDone) and len(done.records) == 4
    s = {x.model: x for x in done.stats if x.category == "all"}
    assert s["b"].diff_to_reference.value == 0.0
    assert s["a"].mean_tokens.value == s["b"].mean_tokens.value
    sampled = SamplingConfig(max_new_tokens=4, temperature=1.0)
    done = list(reply_length_steps([a, b], prompts, sampled, samples=3))[-1]
    assert len(done.records) == 12 and done.stats[0].replies == 6


def test_reply_length_bad_input():
    t = BigramBackend(random_table(8, 1))
    with pytest.raises(BadInput, match="empty"):
        list(reply_length_steps([t], [], SamplingConfig()))
    with pytest.raises(BadInput, match="temperature"):
        list(reply_length_steps([t], [Prompt("x")], SamplingConfig(), samples=2))


def test_built_in_prompt_sets_and_texts(tmp_path):
    for name in PROMPT_SETS:
        _, ps = load_prompts(name)
        assert len(ps) >= 16 and all(p.text for p in ps)
        if name.startswith("reasoning"):
            assert all(p.answer is not None for p in ps)
    assert len(load_prompts("reasoning")[1]) == 32
    name, text = load_text("heldout")
    assert "Keeper" in text and "茶馆" in text
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", "utf-8")
    with pytest.raises(BadInput, match="no prompts"):
        load_prompts(str(empty))
    with pytest.raises(BadInput, match="empty"):
        load_text(str(empty))
    with pytest.raises(BadInput, match="no such file"):
        load_text(str(tmp_path / "missing.txt"))
    lines = tmp_path / "mine.txt"
    lines.write_text("first prompt\n\nsecond prompt\n", "utf-8")
    assert [p.text for p in load_prompts(str(lines))[1]] == ["first prompt", "second prompt"]
