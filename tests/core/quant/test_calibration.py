from __future__ import annotations

import json
import random
import re

import pytest
import torch

from qdesk.core.errors import BadInput
from qdesk.core.quant.calibration import BUILTIN, build_calibration
from qdesk.core.quant.reasoning import worked_problems


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from qdesk.core.models.demo import ensure_demo_model

    return AutoTokenizer.from_pretrained(str(ensure_demo_model()))


@pytest.mark.parametrize("name", [n for n in BUILTIN if n != "self"])
def test_builtin_sets_give_windows_and_a_stable_hash(tok, name):
    a = build_calibration(name, tok, samples=4, tokens=64, seed=1)
    b = build_calibration(name, tok, samples=4, tokens=64, seed=1)
    assert a.input_ids.shape == (4, 64) and a.input_ids.dtype == torch.int64
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert a.describe()["samples"] == 4
    c = build_calibration(name, tok, samples=4, tokens=64, seed=2)
    assert c.sha256 != a.sha256


def test_code_set_is_python_source(tok):
    text = tok.decode(build_calibration("code", tok, samples=2, tokens=128).input_ids[0])
    assert re.search(r"\b(def|import|return|class)\b", text)


def test_chat_set_uses_the_chat_template(tok):
    text = tok.decode(build_calibration("chat", tok, samples=2, tokens=256).input_ids[0])
    assert "<|im_start|>" in text


def test_worked_problems_have_right_answers():
    for p in worked_problems(random.Random(0), 200):
        assert p.solution.endswith(f"Answer: {p.answer}".replace(", ", " and "))
        if p.question.startswith("Solve for x"):
            a, sign, b, c = re.match(r"Solve for x: (\d+)x ([+-]) (\d+) = (-?\d+)", p.question).groups()
            x = int(p.answer)
            assert int(a) * x + (int(b) if sign == "+" else -int(b)) == int(c)


def test_user_files(tok, tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("\n\n".join(f"Paragraph {i} about rivers and hills." for i in range(200)))
    assert build_calibration(str(txt), tok, samples=4, tokens=32).input_ids.shape == (4, 32)
    jl = tmp_path / "c.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Hi {i}"},
                          {"role": "assistant", "content": "Hello there, friend."}]}
            for i in range(60)]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"text": "plain"}\n')
    ids = build_calibration(str(jl), tok, samples=4, tokens=32).input_ids
    assert "<|im_start|>" in tok.decode(ids[0])


def test_bad_calibration_input(tok, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(BadInput, match="empty"):
        build_calibration(str(empty), tok, 2, 16)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(BadInput, match="UTF-8"):
        build_calibration(str(latin), tok, 2, 16)
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    with pytest.raises(BadInput, match="fewer than"):
        build_calibration(str(short), tok, 4, 64)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"other": 1}\n')
    with pytest.raises(BadInput, match="'text'"):
        build_calibration(str(bad), tok, 1, 8)
    with pytest.raises(BadInput, match="neither a built-in"):
        build_calibration(str(tmp_path / "missing.txt"), tok, 1, 8)
    with pytest.raises(BadInput, match="needs the model"):
        build_calibration("self", tok, 1, 8)


def test_self_set_is_generated_by_the_model(tok):
    from quant_helpers import make_tiny

    model = make_tiny(vocab_size=len(tok))
    c = build_calibration("self", tok, samples=3, tokens=16, seed=0, model=model)
    assert c.input_ids.shape == (3, 16)
