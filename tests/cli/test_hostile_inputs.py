"""Hostile and careless inputs: every subcommand answers with its exit code and
one line that names the problem, never a traceback (rows: hostile_cases.py).

The tiny llama folder makes every row fast; rows that would load a model fail
on the input first, which is the point (checked before any expensive step)."""

from __future__ import annotations

import pytest
from families import tiny_folder
from hostile_cases import CASES, DATA_DIR_CASES, run_case


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_folder("llama", tmp_path_factory.mktemp("hostile") / "tiny")


# Rows refused before any model is opened (a spy on open_model counts calls).
EARLY = {name for name, *_ in CASES if name.startswith(("quantize-", "chat-", "compare-", "export-",
                                                        "calib-", "plan-", "output-", "budget-"))}


@pytest.mark.parametrize(("name", "build", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input(base, tmp_path, monkeypatch, name, build, code, words):
    import qdesk.core.models as models

    opened = []
    real = models.open_model
    monkeypatch.setattr(models, "open_model", lambda *a, **k: opened.append(a) or real(*a, **k))
    got, line, traceback = run_case(build(base, tmp_path))
    if name in EARLY:
        assert opened == [], f"{name}: refused only after a model was opened: {line}"
    assert not traceback, line
    assert got == code, line
    assert words in line, line
    assert line.startswith("qdesk: error:") or line.startswith("qdesk: cancelled"), line


@pytest.mark.parametrize(("build", "code", "words"), [c[1:] for c in DATA_DIR_CASES],
                         ids=[c[0] for c in DATA_DIR_CASES])
def test_damaged_data_folder(base, tmp_path, monkeypatch, build, code, words):
    """A data folder that is a file, or a damaged dtype cache: the model still
    opens (the cache is only a cache), or one line says what to fix."""
    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path / "unused"))  # restored after the test
    got, line, traceback = run_case(build(base, tmp_path))
    assert not traceback and got == code, line
    assert words in line, line


def test_force_replaces_only_a_verified_checkpoint(base, tmp_path):
    """--force replaces a checkpoint qdesk wrote; once the user adds a file to
    it, the same --force is refused and the file survives."""
    out = tmp_path / "q"
    args = ["quantize", str(base), "-o", str(out), "--calib-samples", "2", "--calib-tokens", "16",
            "--no-self-check"]
    assert run_case(args)[0] == 0
    first = (out / "model.safetensors").stat().st_mtime_ns
    assert run_case([*args, "--force"])[0] == 0
    assert (out / "model.safetensors").stat().st_mtime_ns != first
    (out / "my-notes.txt").write_text("mine")
    code, line, _ = run_case([*args, "--force"])
    assert code == 2 and "my-notes.txt is not as qdesk wrote it" in line
    assert (out / "my-notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if "qdesk-" in p.name]  # no partials left
