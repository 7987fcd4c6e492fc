"""Normal runs print only qdesk's own lines on stderr: no third-party progress
bars (compressed-tensors' "Decompressing model", transformers' "Loading
weights"), no deprecation warnings (transformers 5.24's ``past_key_values``).

Each command runs as its own process with the environment a user has: none of
the quieting variables the test session sets for itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from families import tiny_folder

# What qdesk itself writes on stderr in these commands.
QDESK_LINES = re.compile(
    r"(capture|self-check|sensitivity|dequantize|tokenizer) \d+/\d+"
    r"|\[\d+/\d+\] \S+: \w+ \d-bit g\w+ error [\d.]+ \([\d.]+ s\)"
    r"|saving \S+|done: .*|self-check on .*|note: .*"
    r"|window \d+/\d+ \(\d+ s\)"
)
QUIETING = ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
            "PYTHONWARNINGS", "TRANSFORMERS_NO_ADVISORY_WARNINGS")


def _qdesk(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in QUIETING}
    proc = subprocess.run([sys.executable, "-m", "qdesk.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


def _foreign(stderr: str) -> list[str]:
    lines = [p.strip() for p in re.split(r"[\r\n]", stderr) if p.strip()]
    return [line for line in lines if not QDESK_LINES.fullmatch(line)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    dense = tiny_folder("llama", root / "tiny")
    quantized = root / "tiny-awq"
    proc = _qdesk("quantize", dense, "--method", "awq", "--calib", "general",
                  "--calib-samples", "4", "--calib-tokens", "64", "-o", quantized)
    return dense, quantized, proc


def test_quantize_prints_only_its_own_lines(models):
    *_, proc = models
    assert _foreign(proc.stderr) == []
    assert "done: 14 layers quantized" in proc.stderr and "self-check on heldout" in proc.stderr


def test_compare_chat_and_info_of_a_checkpoint_are_quiet(models):
    dense, quantized, _ = models
    compare = _qdesk("compare", dense, quantized, "--text", "heldout", "--ctx", "64",
                     "--chunks", "2")
    assert _foreign(compare.stderr) == [] and "window 2/2" in compare.stderr
    assert "KL divergence statistics" in compare.stdout
    chat = _qdesk("chat", dense, quantized, "--prompt", "Hello", "--max-new-tokens", "4")
    assert _foreign(chat.stderr) == [] and chat.stdout.count("== ") == 2
    info = _qdesk("info", quantized)
    assert info.stderr == "" and "compressed-tensors" in info.stdout


def test_the_compressed_tensors_route_is_quiet_too(models):
    """qdesk loads its checkpoints packed; with --trust-remote-code (this model
    ships no code) it lets transformers and compressed-tensors load them, whose
    tqdm bars ("Applying quantization config", some with an explicit
    disable=False) must not reach the user."""
    dense, quantized, _ = models
    compare = _qdesk("compare", dense, quantized, "--text", "heldout", "--ctx", "64",
                     "--chunks", "1", "--trust-remote-code")
    assert _foreign(compare.stderr) == [], compare.stderr
