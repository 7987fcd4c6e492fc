"""No lost files: the exclusive publish step, two runs on one output, SIGTERM
during a save, stale partial folders, and a disk that is really full (a small
tmpfs mounted for the test; skipped where mounting is not permitted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from families import tiny_folder

from qdesk.core.atomic import clean_stale_partials, partial_name, publish, replace_verified
from qdesk.core.errors import BadInput


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_folder("llama", tmp_path_factory.mktemp("save") / "tiny")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_publish_never_replaces_what_appeared(tmp_path):
    tmp, dest = tmp_path / "new", tmp_path / "dest"
    tmp.mkdir()
    (tmp / "a").write_text("new")
    dest.mkdir()
    (dest / "mine.txt").write_text("the user's")
    with pytest.raises(FileExistsError):
        publish(tmp, dest)
    assert (dest / "mine.txt").read_text() == "the user's" and (tmp / "a").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileExistsError):  # not even an empty folder is taken over
        publish(tmp, empty)
    f = tmp_path / "f.new"
    f.write_text("x")
    (tmp_path / "f").write_text("theirs")
    with pytest.raises(FileExistsError):
        publish(f, tmp_path / "f")
    assert (tmp_path / "f").read_text() == "theirs"


def test_replace_verified_keeps_what_changed_during_the_swap(tmp_path):
    tmp, dest = tmp_path / "new", tmp_path / "dest"
    tmp.mkdir()
    (tmp / "a").write_text("new")
    dest.mkdir()
    (dest / "a").write_text("old")
    calls = []

    def verify(p: Path):  # accepts before the swap; the old content "changed" after it
        calls.append(p)
        if len(calls) > 1:
            raise BadInput("changed")

    replace_verified(tmp, dest, verify)
    assert (dest / "a").read_text() == "new"
    kept = [p for p in tmp_path.iterdir() if ".kept-" in p.name]
    assert len(kept) == 1 and (kept[0] / "a").read_text() == "old"


def test_stale_partials_of_dead_processes_only(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".q.qdesk-partial-{dead}"
    stale.mkdir()
    stale_gguf = tmp_path / f".m.qdesk-work-{dead}.gguf"
    stale_gguf.write_bytes(b"x")
    mine = partial_name(tmp_path / "q")  # this process's own: alive
    mine.mkdir()
    other_alive = tmp_path / f".q.qdesk-partial-{os.getppid()}"
    other_alive.mkdir()
    users = tmp_path / f"q.qdesk-partial-{dead}"  # not hidden: not a name qdesk makes
    users.mkdir()
    removed = clean_stale_partials(tmp_path)
    assert sorted(removed) == sorted([stale, stale_gguf])
    assert mine.exists() and other_alive.exists() and users.exists() and alive


def _quantize_steps(base: Path, out: Path, force=False):
    from qdesk.core.models import open_model
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.steps import quantize_steps

    loaded = open_model(str(base), backend="hf", dtype="float32")
    calib = build_calibration("general", loaded.hf_tokenizer, 2, 16, 0)
    config = make_config("rtn", bits=4, group_size=64, symmetric=True)
    return quantize_steps(loaded, config, None, calib, output_dir=out, force=force, check=None)


def test_two_runs_on_one_output_cannot_both_succeed(base, tmp_path):
    """Run A reaches its save; meanwhile run B writes the same -o; A must fail
    and leave B's checkpoint as it was, and the folder a user made likewise."""
    from qdesk.core.quant.events import SavingCheckpoint

    out = tmp_path / "q"
    a = _quantize_steps(base, out)
    for ev in a:
        if isinstance(ev, SavingCheckpoint):
            break
    for _ in _quantize_steps(base, out):  # run B, to the end
        pass
    b_files = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(BadInput, match="exists .pass --force|appeared while"):
        for _ in a:
            pass
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == b_files
    # The same with --force: B's checkpoint appeared after A checked the name.
    out2 = tmp_path / "q2"
    a = _quantize_steps(base, out2, force=True)
    for ev in a:
        if isinstance(ev, SavingCheckpoint):
            break
    out2.mkdir()
    (out2 / "notes.txt").write_text("the user's")
    with pytest.raises(BadInput, match="not verifiably a qdesk checkpoint"):
        for _ in a:
            pass
    assert (out2 / "notes.txt").read_text() == "the user's"
    assert not [p for p in tmp_path.iterdir() if "qdesk-" in p.name]


def test_sigterm_during_save_exits_130_and_leaves_nothing(base, tmp_path):
    """SIGTERM, sent the moment the partial folder appears, is a cancel."""
    for attempt in range(4):
        work = tmp_path / f"run{attempt}"
        work.mkdir()
        out = work / "q"
        proc = subprocess.Popen(
            [sys.executable, "-m", "qdesk.cli", "quantize", str(base), "-o", str(out),
             "--calib-samples", "2", "--calib-tokens", "16", "--no-self-check"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if any("qdesk-partial" in p.name for p in work.iterdir()):
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.0005)
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            continue  # the save won the race; try again
        assert proc.returncode == 130, err
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "qdesk: cancelled"
        assert list(work.iterdir()) == []  # no checkpoint, no partial folder
        return
    pytest.skip("the save finished before SIGTERM arrived, four times")


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of a few hundred KiB (tmpfs), or skip."""
    def mount(size: str) -> Path:
        where = tmp_path / f"disk-{size}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounted.append(where)
        return where

    mounted: list[Path] = []
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.parametrize(("size", "writer"), [("64k", "safetensors"), ("600k", "tokenizers")])
def test_disk_full_is_exit_3_with_the_space_needed(base, small_disk, size, writer):
    from hostile_cases import run_case

    disk = small_disk(size)
    code, line, traceback = run_case(["quantize", str(base), "-o", str(disk / "q"),
                                      "--calib-samples", "2", "--calib-tokens", "16",
                                      "--no-self-check"])
    assert (code, traceback) == (3, False), line
    assert "disk full" in line and "needs about" in line, line
    assert list(disk.iterdir()) == []  # nothing half-written left


def test_disk_full_in_export_and_in_the_dense_copy(base, small_disk, monkeypatch, demo_gguf_path):
    from hostile_cases import run_case

    disk = small_disk("256k")
    code, line, traceback = run_case(["export", str(base), "--format", "bf16", "-o",
                                      str(disk / "e"), "--no-verify"])
    assert (code, traceback) == (3, False), line
    assert "disk full" in line or "needs about" in line, line
    assert list(disk.iterdir()) == []
    data = small_disk("8m")  # the demo's dense copy needs 270 MB
    monkeypatch.setenv("QDESK_DATA_DIR", str(data))
    code, line, traceback = run_case(["info", str(demo_gguf_path), "--backend", "hf"])
    assert (code, traceback) == (3, False), line
    assert "disk full" in line and "GiB free" in line, line
    leftovers = [p for p in (data / "models").iterdir()] if (data / "models").exists() else []
    assert leftovers == []


def test_every_writer_s_disk_full_error_is_recognized(small_disk):
    """The errors the writers really raise on a full disk: Python's OSError,
    numpy's short write (gguf-py writes tensors with tofile), safetensors' and
    tokenizers' Rust errors; each is exit 3, not a traceback."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models

    from qdesk.core.errors import is_disk_full

    disk = small_disk("64k")
    raised = []
    for write in (
        lambda: (disk / "a").write_bytes(b"x" * (1 << 20)),
        lambda: np.zeros(1 << 18, dtype=np.float32).tofile(open(disk / "b", "wb")),
        lambda: save_file({"w": torch.zeros(1 << 18)}, str(disk / "c.safetensors")),
        lambda: Tokenizer(models.WordLevel({f"w{i}": i for i in range(20000)}, "w0")).save(
            str(disk / "d.json")),
    ):
        with pytest.raises(Exception) as e:  # noqa: B017 - each library has its own type
            write()
        raised.append(e.value)
    assert [is_disk_full(e) for e in raised] == [True] * 4, [repr(e)[:120] for e in raised]
