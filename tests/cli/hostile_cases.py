"""Hostile and careless inputs for every subcommand, one row each.

A row is (id, build, code, words): ``build(base, tmp)`` makes the input from a
tiny llama folder ``base`` (tests/families.py) inside ``tmp`` and returns the
argv; ``code`` is the expected exit code and ``words`` must be in the one line
the CLI prints on stderr. ``run_case`` runs the CLI in-process and reports
(exit code, last stderr line, traceback seen). Used by test_hostile_inputs.py
and by benchmarks/hostile_table.py (the before/after table).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
from pathlib import Path


def copy(base: Path, tmp: Path, name: str = "m") -> Path:
    out = tmp / name
    shutil.copytree(base, out)
    return out


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def fake_checkpoint(base: Path, tmp: Path, recipe) -> Path:
    """A folder that looks like a qdesk checkpoint: the tiny model with a qdesk.json."""
    ck = copy(base, tmp, "ck")
    (ck / "qdesk.json").write_text(recipe if isinstance(recipe, str) else json.dumps(recipe))
    edit_json(ck / "config.json", lambda c: c.update(quantization_config={
        "quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {}}))
    return ck


def _index_to(base, tmp, target: str):
    m = copy(base, tmp)
    (m / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"model.embed_tokens.weight": target}}))
    if target.endswith(".bin"):
        (m / target).write_bytes(b"PK not really a pickle")
    return ["info", str(m)]


def _drop_tensor(base, tmp, all_of_them=False):
    from safetensors.torch import load_file, save_file

    m = copy(base, tmp)
    state = load_file(str(m / "model.safetensors"))
    if all_of_them:
        state = {f"other.{k}": v for k, v in state.items()}
    else:
        del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, str(m / "model.safetensors"), metadata={"format": "pt"})
    return ["info", str(m)]


def _config(base, tmp, change):
    m = copy(base, tmp)
    edit_json(m / "config.json", change)
    return ["info", str(m)]


def _file(tmp, name, text) -> str:
    p = tmp / name
    p.write_text(text, encoding="utf-8") if isinstance(text, str) else p.write_bytes(text)
    return str(p)


def _quantize(base, tmp, *extra, out=None):
    return ["quantize", str(base), "-o", str(out or tmp / "q"), "--calib-samples", "2",
            "--calib-tokens", "16", *extra]


def _user_folder(tmp, qdesk_json="{}"):
    o = tmp / "out"
    o.mkdir()
    (o / "qdesk.json").write_text(qdesk_json)
    (o / "my-notes.txt").write_text("the user's work")
    return o


def _truncated_weights(base, tmp):
    m = copy(base, tmp)
    p = m / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    return ["info", str(m)]


def _header_length(base, tmp):
    m = copy(base, tmp)
    p = m / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    return ["info", str(m)]


def _not_utf8_output(base, tmp):
    return _quantize(base, tmp, out=Path(os.fsdecode(bytes(tmp) + b"/out-\xff\xfe")))


def _script(tmp, text):
    return ["gui", "--script", _file(tmp, "s.json", text)]


CASES = [
    # 1. user files never replaced
    ("quantize-force-over-user-folder-with-empty-qdesk-json",
     lambda b, t: _quantize(b, t, "--force", out=_user_folder(t)), 2, "not verifiably a qdesk checkpoint"),
    ("quantize-over-existing-folder-without-force",
     lambda b, t: _quantize(b, t, out=_user_folder(t)), 2, "exists (pass --force"),
    ("export-force-over-user-folder",
     lambda b, t: ["export", str(b), "--format", "bf16", "-o", str(_user_folder(t)), "--force"],
     2, "not a qdesk export"),
    ("export-force-over-user-file",
     lambda b, t: ["export", str(b), "--format", "gguf", "--type", "F16", "-o",
                   _file(t, "mine.gguf", b"GGUF mine"), "--force"], 2, "not a qdesk export"),
    # 3. safetensors only
    ("index-maps-to-pytorch-bin", lambda b, t: _index_to(b, t, "pytorch_model.bin"), 2,
     "not a .safetensors file"),
    ("index-maps-outside-the-folder", lambda b, t: _index_to(b, t, "../other/model.safetensors"), 2,
     "outside the model folder"),
    ("index-maps-to-a-missing-file", lambda b, t: _index_to(b, t, "gone.safetensors"), 2,
     "not in the folder"),
    ("index-not-json", lambda b, t: ["info", str(_index_json(b, t, "{oops"))], 2, "not readable JSON"),
    ("only-pickle-weights", lambda b, t: ["info", str(_only_bin(b, t))], 2, "safetensors only"),
    # 4. missing weights
    ("a-layer-weight-missing", lambda b, t: _drop_tensor(b, t), 2,
     "model.layers.1.mlp.down_proj.weight"),
    ("none-of-the-model-tensors", lambda b, t: _drop_tensor(b, t, all_of_them=True), 2,
     "lack"),
    ("safetensors-truncated", _truncated_weights, 2, "truncated"),
    ("safetensors-huge-header-length", _header_length, 2, "bad header length"),
    # 6. values read from files
    ("config-not-json", lambda b, t: ["info", str(_raw_config(b, t, "{"))], 2, "config.json"),
    ("config-a-list", lambda b, t: ["info", str(_raw_config(b, t, "[1, 2]"))], 2, "not a JSON object"),
    ("config-terabytes", lambda b, t: _config(b, t, lambda c: c.update(
        hidden_size=2**20, intermediate_size=2**22, num_hidden_layers=4096)), 2, "config.json"),
    ("config-sizes-beyond-the-weights", lambda b, t: _config(b, t, lambda c: c.update(
        hidden_size=2**17, intermediate_size=2**20, num_hidden_layers=4096)), 2,
     "far more than the weight files hold"),
    ("config-negative-layers", lambda b, t: _config(b, t, lambda c: c.update(num_hidden_layers=-1)),
     2, "config.json"),
    ("config-string-sizes", lambda b, t: _config(b, t, lambda c: c.update(hidden_size="64")),
     2, "config.json"),
    ("config-no-model-type", lambda b, t: _config(b, t, lambda c: c.pop("model_type")),
     2, "model_type"),
    ("qdesk-json-wrong-types", lambda b, t: ["info", str(fake_checkpoint(b, t, {"config": [1]}))],
     2, "qdesk.json"),
    ("qdesk-json-not-json", lambda b, t: ["info", str(fake_checkpoint(b, t, "{{"))], 2, "qdesk.json"),
    ("hub-id-trailing-dash", lambda b, t: ["info", "org/name-"], 2, "org/name-"),
    ("hub-id-100-chars", lambda b, t: ["info", "org/" + "n" * 100], 2, "not a valid"),
    ("no-such-path", lambda b, t: ["info", str(t / "nothing-here")], 2, "no such file or folder"),
    ("calib-messages-not-objects", lambda b, t: _quantize(
        b, t, "--calib", _file(t, "c.jsonl", json.dumps({"messages": ["hi", 3]}) + "\n")), 2, "c.jsonl"),
    ("calib-not-json", lambda b, t: _quantize(b, t, "--calib", _file(t, "c.jsonl", "{x\n")), 2,
     "c.jsonl"),
    ("calib-missing-file", lambda b, t: _quantize(b, t, "--calib", str(t / "none.jsonl")), 2,
     "none.jsonl"),
    ("plan-not-json", lambda b, t: _quantize(b, t, "--plan", _file(t, "p.json", "[[")), 2, "p.json"),
    ("plan-rule-match-not-a-string", lambda b, t: _quantize(b, t, "--plan", _file(
        t, "p.json", '{"rules": [{"match": 3}]}')), 2, "not a pattern string"),
    ("plan-rule-bits-5", lambda b, t: _quantize(b, t, "--plan", _file(
        t, "p.json", '{"rules": [{"match": "*", "bits": 5}]}')), 2, "bits must be one of"),
    ("plan-budget-nan", lambda b, t: _quantize(b, t, "--plan", _file(
        t, "p.json", '{"rules": [], "sensitivity": true, "budget_bpw": NaN}')), 2, "budget_bpw"),
    ("output-name-not-utf8", _not_utf8_output, 2, "not valid UTF-8"),
    # 7. options checked before any model loads
    ("output-parent-is-a-file", lambda b, t: _quantize(b, t, out=Path(_file(t, "f", "x")) / "q"), 2,
     "not a folder"),
    ("output-parent-missing", lambda b, t: _quantize(b, t, out=t / "a" / "b"), 2, "no such folder"),
    ("quantize-bits-1", lambda b, t: _quantize(b, t, "--bits", "1"), 2, "bits"),
    ("quantize-group-0", lambda b, t: _quantize(b, t, "--group-size", "0"), 2, "group"),
    ("quantize-calib-samples-0", lambda b, t: ["quantize", str(b), "-o", str(t / "q"),
                                               "--calib-samples", "0"], 2, "at least 1 sample"),
    ("budget-bpw-without-sensitivity-plan", lambda b, t: _quantize(b, t, "--budget-bpw", "4.5"), 2,
     "budget-bpw"),
    ("chat-empty-prompt", lambda b, t: ["chat", str(b), "--prompt", ""], 2, "prompt"),
    ("chat-max-new-tokens-0", lambda b, t: ["chat", str(b), "--prompt", "hi", "--max-new-tokens", "0"],
     2, "max new tokens"),
    ("chat-temperature-negative", lambda b, t: ["chat", str(b), "--prompt", "hi", "--temperature", "-1"],
     2, "temperature"),
    ("chat-top-p-2", lambda b, t: ["chat", str(b), "--prompt", "hi", "--top-p", "2"], 2, "top-p"),
    ("chat-n-ctx-tiny", lambda b, t: ["chat", str(b), "--prompt", "hi", "--n-ctx", "3"], 2, "n-ctx"),
    ("compare-samples-0", lambda b, t: ["compare", str(b), str(b), "--prompts",
                                        _file(t, "p.jsonl", '{"prompt": "hi"}\n'), "--samples", "0"],
     2, "samples"),
    ("compare-prompt-empty", lambda b, t: ["compare", str(b), str(b), "--prompts",
                                           _file(t, "p.jsonl", '{"prompt": ""}\n')], 2, "prompt"),
    ("compare-prompt-null", lambda b, t: ["compare", str(b), str(b), "--prompts",
                                          _file(t, "p.jsonl", "null\n")], 2, "p.jsonl"),
    ("compare-text-missing", lambda b, t: ["compare", str(b), str(b), "--text", str(t / "none.txt")],
     2, "none.txt"),
    ("compare-text-binary", lambda b, t: ["compare", str(b), str(b), "--text",
                                          _file(t, "t.txt", b"\xff\xfe\x00garbage")], 2, "t.txt"),
    ("compare-ctx-1", lambda b, t: ["compare", str(b), str(b), "--text", _file(t, "t.txt", "hello " * 50),
                                    "--ctx", "1"], 2, "ctx"),
    ("export-unknown-type", lambda b, t: ["export", str(b), "--format", "gguf", "--type", "Q9_9", "-o",
                                          str(t / "x.gguf")], 2, "Q9_9"),
    ("export-parent-missing", lambda b, t: ["export", str(b), "--format", "bf16", "-o",
                                            str(t / "a" / "b")], 2, "no such folder"),
    ("export-imatrix-missing", lambda b, t: ["export", str(b), "--format", "gguf", "--type", "Q4_K_M",
                                             "-o", str(t / "x.gguf"), "--imatrix-calib",
                                             str(t / "none.gguf")], 2, "none.gguf"),
    ("gui-script-missing", lambda b, t: ["gui", "--script", str(t / "none.json")], 2, "none.json"),
    ("gui-script-unknown-action", lambda b, t: _script(t, "{"), 2, "unknown action"),
    ("gui-script-not-utf8", lambda b, t: _script(t, b"\xff\xfe\x00 page chat"), 2, "s.json"),
    ("unknown-subcommand", lambda b, t: ["frobnicate"], 2, "invalid choice"),
    ("quantize-unknown-method", lambda b, t: _quantize(b, t, "--method", "magic"), 2, "magic"),
    ("quantize-calib-tokens-4", lambda b, t: _quantize(b, t, "--calib-tokens", "4"), 2,
     "at least 1 sample of 8 tokens"),
    ("chat-top-k-negative", lambda b, t: ["chat", str(b), "--prompt", "hi", "--top-k", "-1"], 2,
     "top-k"),
    ("chat-repetition-penalty-0", lambda b, t: ["chat", str(b), "--prompt", "hi",
                                                "--repetition-penalty", "0"], 2, "repetition"),
    ("chat-stop-empty", lambda b, t: ["chat", str(b), "--prompt", "hi", "--stop", ""], 2, "stop"),
    ("chat-two-backends-for-one-model", lambda b, t: ["chat", str(b), "--prompt", "hi",
                                                      "--backend", "hf,hf"], 2, "backend"),
    ("compare-chunks-0", lambda b, t: ["compare", str(b), str(b), "--text", "heldout",
                                       "--chunks", "0"], 2, "chunks"),
    ("export-shard-size-0", lambda b, t: ["export", str(b), "--format", "bf16", "-o", str(t / "e"),
                                          "--shard-size", "0"], 2, "shard"),
    ("export-threads-negative", lambda b, t: ["export", str(b), "--format", "gguf", "--type",
                                              "Q4_K_M", "-o", str(t / "x.gguf"), "--threads", "-3"],
     2, "threads"),
    ("config-model-type-a-list", lambda b, t: _config(b, t, lambda c: c.update(model_type=[])), 2,
     "not an architecture name"),
    ("export-verify-ctx-1", lambda b, t: ["export", str(b), "--format", "bf16", "-o", str(t / "e"),
                                          "--verify-ctx", "1"], 2, "at least 16 tokens"),
    ("export-output-not-utf8", lambda b, t: ["export", str(b), "--format", "bf16", "-o",
                                             os.fsdecode(bytes(t) + b"/e-\xff")], 2, "not valid UTF-8"),
]


def _index_json(base, tmp, text):
    m = copy(base, tmp)
    (m / "model.safetensors.index.json").write_text(text)
    return m


def _only_bin(base, tmp):
    m = copy(base, tmp)
    (m / "model.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(b"not a pickle")
    return m


def _raw_config(base, tmp, text):
    m = copy(base, tmp)
    (m / "config.json").write_text(text)
    return m


def run_case(argv) -> tuple[int | str, str, bool]:
    """(exit code or 'raised Type', the last stderr line, whether a traceback showed)."""
    from qdesk.cli import main

    if argv and argv[0] == "gui":  # the window ends its process with os._exit: a child
        import subprocess
        import sys

        p = subprocess.run([sys.executable, "-m", "qdesk.cli", *argv], capture_output=True,
                           text=True, timeout=600, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
        lines = [ln for ln in p.stderr.replace("\r", "\n").splitlines() if ln.strip()]
        return p.returncode, lines[-1] if lines else "", "Traceback" in p.stderr
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as e:
        code = e.code
    except BaseException as e:  # noqa: BLE001 - a finding, reported as such
        return f"raised {type(e).__name__}", " ".join(str(e).split())[:160], True
    text = err.getvalue()
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return code, lines[-1] if lines else "", "Traceback" in text


def _data_dir_case(base, tmp, kind):
    """QDESK_DATA_DIR damaged: a file, a read-only folder, a garbage cpu_dtype.json.
    Returns argv; the env var is set by ``with_data_dir`` in the test."""
    data = tmp / "data"
    if kind == "file":
        data.write_text("not a folder")
    else:
        data.mkdir()
        (data / "cpu_dtype.json").write_text(
            '{"x": 1, "' + "a" * 10 + '": [1]}' if kind == "garbage" else "\xff{")
    os.environ["QDESK_DATA_DIR"] = str(data)  # undone by the caller (see DATA_DIR_CASES)
    return ["info", str(base)]


# Rows that set QDESK_DATA_DIR (the test restores it).
DATA_DIR_CASES = [
    ("data-dir-is-a-file", lambda b, t: _data_dir_case(b, t, "file"), 0, ""),
    ("cpu-dtype-json-garbage", lambda b, t: _data_dir_case(b, t, "garbage"), 0, ""),
    ("cpu-dtype-json-not-json", lambda b, t: _data_dir_case(b, t, "bytes"), 0, ""),
    ("demo-with-the-data-dir-a-file", lambda b, t: [*_data_dir_case(b, t, "file")[:1], "demo"], 2,
     "QDESK_DATA_DIR"),
]
