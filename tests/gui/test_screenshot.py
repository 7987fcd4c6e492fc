"""Screenshot mode: ``qdesk gui MODEL --script FILE --screenshot OUT.png`` runs the
actions offscreen, writes the picture and exits 0; a failing action exits 2
with the reason in one line and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from PySide6.QtGui import QImage


def _gui(args, tmp_path, timeout=300):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               QDESK_SETTINGS_DIR=str(tmp_path / "settings"))
    (tmp_path / "settings").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "qdesk.cli", "gui", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_script_runs_a_quantization_and_writes_the_screenshot(tmp_path, tiny_llama):
    out = tmp_path / "tiny-rtn4"
    shot = tmp_path / "shot.png"
    script = tmp_path / "script.txt"
    script.write_text(
        "# a short run on a tiny model\n"
        "resize 1024 640\n"
        f"load {tiny_llama}\n"
        "page quantize\n"
        f"quantize.set method=rtn bits=4 group_size=32 calib_samples=2 calib_tokens=32 output={out}\n"
        "quantize.run\n"
        "language zh_CN\n", encoding="utf-8")
    p = _gui(["--script", str(script), "--screenshot", str(shot)], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == ""  # no Qt or library chatter
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1024, 640)
    assert (out / "qdesk.json").is_file()


def test_a_failing_action_exits_2_with_the_reason(tmp_path):
    shot = tmp_path / "shot.png"
    script = tmp_path / "script.txt"
    script.write_text(f"load {tmp_path / 'nothing-here'}\n", encoding="utf-8")
    p = _gui(["--script", str(script), "--screenshot", str(shot)], tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("qdesk: error: script line 1 (load ")
    assert "no such file or folder" in lines[0]
    assert not shot.exists()


def test_a_bad_script_exits_2_before_the_window_opens(tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("page quantize\nfly-to-the-moon now\n", encoding="utf-8")
    p = _gui(["--script", str(script), "--screenshot", str(tmp_path / "s.png")], tmp_path)
    assert p.returncode == 2
    assert "unknown action 'fly-to-the-moon'" in p.stderr
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    p = _gui(["--script", str(bad), "--screenshot", str(tmp_path / "s.png")], tmp_path)
    assert p.returncode == 2 and "not UTF-8" in p.stderr


def test_sigterm_cancels_the_jobs_and_exits_130(tmp_path, tiny_llama):
    # PySide swallows a KeyboardInterrupt raised in a slot, so SIGTERM once left
    # `qdesk gui` running; now it cancels (nothing half-written) and exits 130.
    import signal
    import time

    out = tmp_path / "never"
    up = tmp_path / "up.png"
    script = tmp_path / "script.txt"
    script.write_text(
        f"load {tiny_llama}\n"
        "page quantize\n"
        f"quantize.set method=gptq calib_samples=64 calib_tokens=256 output={out}\n"
        "quantize.start\n"
        f"screenshot {up}\n"
        "wait 300000\n", encoding="utf-8")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               QDESK_SETTINGS_DIR=str(tmp_path / "settings"))
    (tmp_path / "settings").mkdir(exist_ok=True)
    p = subprocess.Popen([sys.executable, "-m", "qdesk.cli", "gui", "--script", str(script),
                          "--screenshot", str(tmp_path / "end.png")], env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not up.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert up.exists(), p.stderr.read() if p.poll() is not None else "no window"
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert code == 130
    assert p.stderr.read().strip().splitlines()[-1] == "qdesk: cancelled"
    assert not out.exists() and not any(".never" in q.name for q in tmp_path.iterdir())
    assert not (tmp_path / "end.png").exists()
