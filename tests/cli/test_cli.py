"""The qdesk command: real models, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

from qdesk.cli import main


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qdesk: error:"), err
    return err[0]


def test_info_demo_json(capsys):
    assert main(["info", "demo", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["architecture"] == "LlamaForCausalLM"
    assert facts["layers"] == 30 and facts["hidden_size"] == 576
    assert 130e6 < facts["parameters"] < 140e6
    assert facts["device"] == "cpu" and facts["dtype"] in ("bfloat16", "float32")
    assert "measured" in facts["dtype_reason"]


def test_info_gguf_plain(capsys, demo_gguf_path):
    assert main(["info", str(demo_gguf_path)]) == 0
    out = capsys.readouterr().out
    assert "llamacpp" in out and "Q4_1" in out


def test_chat_two_models_json(capsys):
    code = main([
        "chat", "demo", "demo", "--backend", "hf,llamacpp", "--prompt",
        "What is the capital of France?", "--max-new-tokens", "8", "--json",
    ])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    a, b = out["replies"]
    assert a["text"].startswith("The capital of France is Paris")
    assert b["text"].startswith("L")
    for r in (a, b):
        assert r["n_tokens"] == len(r["tokens"]) <= 8
        assert "".join(t["text"] for t in r["tokens"]) == r["text"]
        for t in r["tokens"]:
            assert set(t) >= {"id", "text", "top", "margin", "entropy", "p_sampled"}
            assert 0 <= t["margin"] <= 1 and len(t["top"]) == 5
    # The second model is scored by the first (the reference) on its own prefix.
    assert "agreement" not in a and all("agreement" not in t for t in a["tokens"])
    first = b["tokens"][0]["agreement"]
    assert first["flip"] and first["ref_top_id"] == a["tokens"][0]["id"]
    assert abs(first["ref_margin"] - a["tokens"][0]["margin"]) < 1e-3
    assert b["agreement"]["first_divergence"] == 0
    assert b["agreement"]["flips"] == sum(t["agreement"]["flip"] for t in b["tokens"])
    assert b["reference_reply_scored"]["tokens"] == a["n_tokens"]


def test_chat_keeps_as_many_alternatives_as_asked(capsys):
    assert main(["chat", "demo", "--prompt", "Hi", "--max-new-tokens", "2", "--json",
                 "--stats-top-k", "20"]) == 0
    (reply,) = json.loads(capsys.readouterr().out)["replies"]
    assert [len(t["top"]) for t in reply["tokens"]] == [20] * reply["n_tokens"]


def test_chat_plain_output_with_agreement(capsys):
    code = main([
        "chat", "demo", "demo", "--backend", "hf,llamacpp", "--prompt",
        "What is the capital of France?", "--max-new-tokens", "4",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "against the reference:" in out and "the greedy paths part at token 0" in out
    assert "flip at token 0 'L'" in out
    assert main([
        "chat", "demo", "demo", "--backend", "hf,llamacpp", "--prompt", "Hi", "--no-agreement",
        "--max-new-tokens", "2",
    ]) == 0
    assert "against the reference" not in capsys.readouterr().out


def test_chat_plain_output(capsys):
    assert main(["chat", "demo", "--prompt", "Say hi.", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== demo") and "tokens" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "/no/such/model"], "no such file or folder"),
        (["chat", "demo", "--prompt", "  "], "the prompt is empty"),
        (["chat", "demo", "--prompt", "hi", "--temperature", "-1"], "temperature"),
        (["chat", "demo", "--prompt", "hi", "--stats-top-k", "0"], "statistics top-k must be in 1..100"),
        (["chat", "demo", "--prompt", "hi", "--backend", "hf,hf"], "2 backends for 1 models"),
        (["info", "someorg/some-model-that-needs-a-network"], "cannot download it"),
        (["chat"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in _one_error_line(capsys)


def test_garbage_gguf_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + b"\xff" * 64)
    assert main(["chat", str(path), "--prompt", "hi"]) == 2
    assert "damaged GGUF" in _one_error_line(capsys)


def test_prompt_longer_than_context_exit_2(capsys, demo_gguf_path):
    assert main(["chat", str(demo_gguf_path), "--prompt", "word " * 5000]) == 2
    assert "holds at most" in _one_error_line(capsys)


def test_console_script_runs_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "qdesk.cli", "info", "/does/not/exist"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "qdesk: error: /does/not/exist: no such file or folder"


def test_load_options(capsys, demo_gguf_path):
    assert main(["info", "demo", "--dtype", "bfloat16", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["dtype"], facts["dtype_reason"]) == ("bfloat16", "as asked")
    assert main(["info", str(demo_gguf_path), "--n-ctx", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["context_length"] == 64
    assert main(["info", "demo", "--n-ctx", "3"]) == 2
    assert "--n-ctx must be at least 16" in _one_error_line(capsys)
