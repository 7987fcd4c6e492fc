"""llama.cpp's own Hugging Face -> GGUF converter, run in a child process.

The converter (``convert_hf_to_gguf.py`` with its ``conversion/`` package and its
own ``gguf-py``) ships only in the llama-cpp-python sdist; ``make setup``
unpacks it into ``<venv>/llama.cpp-convert``. ``QDESK_LLAMA_CONVERTER`` points
elsewhere. It runs as a child process because it imports its own ``gguf``
package (which may differ from the installed one), because a crash in it must
not end the caller, and so that it can be cancelled.

The output is written to a temporary name beside the target and renamed at the
end: a failed or cancelled conversion leaves nothing behind.

``convert_steps`` is the same conversion as a generator of ``ConvertProgress``
events read from the converter's own log (one line per tensor while it plans,
then its write progress); each yield is a cancel point, and closing the
generator kills the child. ``convert_hf_folder`` drives it to the end.
"""

from __future__ import annotations

import functools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qdesk.core.atomic import clean_stale_partials, partial_name, publish, remove
from qdesk.core.errors import BadInput, Cancelled, OutOfResources

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")

# "INFO:hf-to-gguf:blk.0.attn_q.weight,  torch.bfloat16 --> BF16, shape = {576, 576}"
_PLANNED = re.compile(r"^INFO:hf-to-gguf:(\S+),\s+torch\.\w+ --> (\w+), shape")
# tqdm's bar on the converter's stderr: "Writing:  45%|####5     | 5.80M/12.9M [...]"
_WRITING = re.compile(r"^Writing:\s+(\d+)%")
# The converter is silent while it loads a model; a tick this often keeps the
# generator's cancel point reachable.
HEARTBEAT_S = 0.5


@dataclass(frozen=True)
class ConvertProgress:
    """stage: "load" (the converter starts and reads the model), "plan"
    (``done`` tensors mapped so far, ``name`` the last one; ``total`` 0, unknown
    until it writes) or "write" (``done`` percent of the bytes, ``total`` 100)."""

    stage: str
    done: int
    total: int
    name: str = ""


def converter_dir() -> Path:
    override = os.environ.get("QDESK_LLAMA_CONVERTER")
    return Path(override) if override else Path(sys.prefix) / "llama.cpp-convert"


def converter_script() -> Path:
    script = converter_dir() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise BadInput(
            f"llama.cpp's converter is not set up ({script} is missing): run 'make setup'"
        )
    return script


@functools.lru_cache(maxsize=1)
def converter_architectures() -> frozenset[str]:
    """The Hugging Face architectures (``config.json`` ``architectures``) the
    converter has a model class for, read from its ``@ModelBase.register(...)``
    decorators without importing it (no child process, no torch)."""
    names: set[str] = set()
    for path in sorted((converter_dir() / "conversion").glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for call in re.finditer(r"ModelBase\.register\(([^)]*)\)", text):
            names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", call.group(1)))
    return frozenset(names)


def convert_hf_folder(
    source: Path,
    target: Path,
    outtype: str = "bf16",
    cancel: threading.Event | None = None,
    extra_args: tuple[str, ...] = (),
) -> Path:
    """Convert the HF folder ``source`` into the GGUF file ``target``; return it.

    Raises BadInput with the converter's last error line when it refuses the
    model (an architecture it does not know, a missing tokenizer), Cancelled
    when ``cancel`` is set, OutOfResources when the disk is full.
    """
    steps = convert_steps(source, target, outtype, extra_args)
    try:
        for _ in steps:
            if cancel is not None and cancel.is_set():
                raise Cancelled("GGUF conversion cancelled")
    finally:
        steps.close()  # kills the child if it still runs, removes the partial file
    return Path(target)


def convert_steps(
    source: Path,
    target: Path,
    outtype: str = "bf16",
    extra_args: tuple[str, ...] = (),
) -> Iterator[ConvertProgress]:
    """The conversion as a generator: ``ConvertProgress`` events (at least one
    every ``HEARTBEAT_S`` seconds), then ``target`` is in place. Closing it
    early kills the converter and leaves nothing behind. Raises as
    ``convert_hf_folder`` does."""
    if outtype not in OUTTYPES:
        raise BadInput(f"unknown GGUF output type '{outtype}' (choose {', '.join(OUTTYPES)})")
    script = converter_script()
    target = Path(target)
    clean_stale_partials(target.parent)
    tmp = partial_name(target)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(converter_dir() / "gguf-py"), str(converter_dir())]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    # tqdm's write bar is the only progress the converter gives while it writes
    # (its lazy tensors are computed then); it goes to the pipe, never a terminal.
    env.pop("TQDM_DISABLE", None)  # tqdm reads any non-empty value, even "0", as true
    env["TQDM_MININTERVAL"] = "0.5"
    cmd = [sys.executable, str(script), str(source), "--outfile", str(tmp), "--outtype", outtype,
           *extra_args]
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        log: list[str] = []
        last = ConvertProgress("load", 0, 0)
        for line in _lines(proc):
            if line is not None and (m := _PLANNED.match(line)):
                last = ConvertProgress("plan", last.done + 1 if last.stage == "plan" else 1, 0,
                                       m.group(1))
            elif line is not None and (m := _WRITING.match(line)):
                last = ConvertProgress("write", int(m.group(1)), 100)
            elif line is not None:
                log.append(line)
                del log[:-50]
                continue
            yield last
        proc.wait()
        if proc.returncode != 0:
            raise _failure(source, "\n".join(log), proc.returncode, outtype)
        try:
            publish(tmp, target)  # never over a file that appeared meanwhile
        except FileExistsError:
            raise BadInput(f"{target} appeared while the converter was writing it; "
                           "it was left as it is") from None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        remove(tmp)


def _lines(proc: subprocess.Popen) -> Iterator[str | None]:
    """The child's stderr split at newlines and carriage returns (tqdm redraws
    with \\r); None when nothing arrived for ``HEARTBEAT_S``."""
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
        parts = re.split(rb"[\r\n]", pending)
        pending = parts.pop()
        for p in parts:
            text = p.decode("utf-8", "replace").strip()
            if text:
                yield text
    if pending.strip():
        yield pending.decode("utf-8", "replace").strip()


def _failure(source: Path, stderr: str, returncode: int = 1, outtype: str = "bf16") -> Exception:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else "no message"
    if "No space left on device" in stderr:
        weights = sum(p.stat().st_size for p in Path(source).glob("*.safetensors"))
        need = weights * (2 if outtype == "f32" else 1)
        return OutOfResources(f"disk full while converting {source} to GGUF: the file needs "
                              f"about {need / 2**30:.1f} GiB free")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return BadInput(f"llama.cpp's converter crashed ({name}) converting {source}: {last}")
    return BadInput(f"llama.cpp's converter cannot convert {source}: {last}")
