"""llama.cpp's quantizer (``llama_model_quantize``) in a child process.

The child (``quantize_child``) calls llama.cpp through llama-cpp-python's
ctypes; a crash or an abort inside llama.cpp ends the child, not the app, and is
reported as one line naming the signal. The generator yields a
``QuantizerStarted`` event, then one ``ExportProgress`` per tensor parsed from
llama.cpp's log (``[  12/ 273] blk.0.attn_q.weight - ...``), and a tick at
least every ``HEARTBEAT_S`` seconds; closing it kills the child.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from qdesk.core.errors import BadInput, OutOfResources
from qdesk.core.export.events import ExportProgress, QuantizerStarted

HEARTBEAT_S = 0.5
_TENSOR = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


def quantize_steps(source: Path, output: Path, ftype: str, *, imatrix: Path | None = None,
                   overrides: list[tuple[str, str]] = (), metadata: dict | None = None,
                   allow_requantize: bool = False, threads: int = 0,
                   work: Path) -> Iterator[ExportProgress | QuantizerStarted]:
    """Quantize the GGUF ``source`` into ``output`` as llama.cpp's ``ftype``
    (e.g. "Q4_K_M"). ``work``: a scratch folder for the child's spec."""
    spec = {
        "input": str(source), "output": str(output), "ftype": ftype, "threads": threads,
        "allow_requantize": allow_requantize, "imatrix": None if imatrix is None else str(imatrix),
        "overrides": [list(o) for o in overrides], "metadata": metadata or {},
    }
    spec_path = Path(work) / "quantize-spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    cmd = [sys.executable, "-m", "qdesk.core.export.quantize_child", str(spec_path)]
    env = dict(os.environ)
    # the child must import this very qdesk, wherever the caller runs from
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    log: list[bytes] = []
    try:
        yield QuantizerStarted(proc.pid, ftype)
        done, total, name = 0, 0, ""
        for line in _lines(proc):
            if line is not None:
                m = _TENSOR.search(line)
                if m:
                    done, total, name = int(m.group(1)), int(m.group(2)), m.group(3).decode()
                else:
                    log.append(line)
                    del log[:-40]
                    continue
            yield ExportProgress("quantize", done, total, name)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise _failure(proc.returncode, log, ftype)


def _lines(proc: subprocess.Popen) -> Iterator[bytes | None]:
    chunks: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        while True:
            b = proc.stderr.read1(65536)
            chunks.put(b)
            if not b:
                return

    threading.Thread(target=read, daemon=True).start()
    pending = b""
    while True:
        try:
            b = chunks.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            yield None
            continue
        if not b:
            break
        pending += b
        *parts, pending = pending.split(b"\n")
        for p in parts:
            if p.strip():
                yield p.strip()
    if pending.strip():
        yield pending.strip()


def _failure(returncode: int, log: list[bytes], ftype: str) -> Exception:
    text = b"\n".join(log).decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()
              or "exception" in ln.lower()]
    last = (useful or lines or ["no message"])[-1]
    if "No space left on device" in text or "ENOSPC" in text:
        return OutOfResources(f"disk full while llama.cpp quantized to {ftype}")
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        return BadInput(f"llama.cpp's quantizer crashed ({sig}) quantizing to {ftype}; "
                        f"nothing was written (its last words: {last})")
    return BadInput(f"llama.cpp's quantizer failed quantizing to {ftype}: {last}")
