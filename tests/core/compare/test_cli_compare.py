"""``qdesk compare`` end to end on the demo model (small windows to stay quick)."""

from __future__ import annotations

import json

from qdesk.cli import main


def test_compare_text_json(capsys):
    rc = main(["compare", "demo", "demo", "--backend", "hf,llamacpp", "--text", "heldout-en",
               "--ctx", "64", "--chunks", "2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    r = data["reports"][0]
    for key in ("ppl_q", "ppl_base", "cor_ln_ppl", "ln_ppl_ratio", "ln_ppl_ratio_unc",
                "mean_kld", "mean_kld_unc", "mean_dp", "mean_dp_unc", "rms_dp", "same_top_p",
                "same_top_p_unc", "min_flip_margin", "median_flip_margin"):
        assert key in r
    assert set(r["kld_percentiles"]) >= {"Maximum", "99.9%", "Median", "0.1%", "Minimum"}
    assert len(r["flip_bins"]) == 6 and r["tokens"] == 2 * 31
    assert data["skipped"] == []
    assert [m["backend"] for m in data["loaded"]] == ["hf", "llamacpp"]


def test_compare_reference_dtype_is_chosen_and_recorded(capsys):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        assert main(["compare", "demo", "demo", "--backend", "hf", "--dtype", dtype, "--text",
                     "heldout-en", "--ctx", "32", "--chunks", "1", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["loaded"][0]["dtype"] == dtype and data["loaded"][0]["role"] == "reference"
        runs[dtype] = data["reports"][0]["ppl_base"]
    assert runs["float32"] != runs["bfloat16"]  # the dtype reaches the computation


def test_compare_text_prints_llama_style_table(capsys):
    rc = main(["compare", "demo", "demo", "--backend", "hf", "--text", "heldout-zh",
               "--ctx", "32", "--chunks", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Mean    KLD:   0.000000" in out and "Same top p: 100.000" in out


def test_compare_prompts(tmp_path, capsys):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "What is 2 + 2?", "answer": "4"}\n{"prompt": "Say hi."}\n', "utf-8")
    rc = main(["compare", "demo", "demo", "--backend", "hf,llamacpp", "--prompts", str(f),
               "--max-new-tokens", "4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(data["replies"]) == 4
    q = [s for s in data["stats"] if s["category"] == "all"][1]
    assert q["diff_to_reference"] is not None and q["replies"] == 2


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words.", "utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", "utf-8")
    for argv in (
        ["compare", "demo", "demo", "--backend", "hf", "--text", str(short)],
        ["compare", "demo", "demo", "--backend", "hf", "--prompts", str(empty)],
        ["compare", "demo", "demo", "--text", "no-such-text"],
        ["compare", str(tmp_path / "missing.gguf"), "demo", "--text", "heldout"],
    ):
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("qdesk: error:"), (argv, err)
