"""llama.cpp's own Hugging Face -> GGUF converter, run in a child process.

The converter (``convert_hf_to_gguf.py`` with its ``conversion/`` package and its
own ``gguf-py``) ships only in the llama-cpp-python sdist; ``make setup``
unpacks it into ``<venv>/llama.cpp-convert``. ``QDESK_LLAMA_CONVERTER`` points
elsewhere. It runs as a child process because it imports its own ``gguf``
package (which may differ from the installed one), because a crash in it must
not end the caller, and so that it can be cancelled.

The output is written to a temporary name beside the target and renamed at the
end: a failed or cancelled conversion leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from qdesk.core.errors import BadInput, Cancelled, OutOfResources

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")


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
    if outtype not in OUTTYPES:
        raise BadInput(f"unknown GGUF output type '{outtype}' (choose {', '.join(OUTTYPES)})")
    script = converter_script()
    target = Path(target)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(converter_dir() / "gguf-py"), str(converter_dir())]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TQDM_DISABLE", "1")
    cmd = [sys.executable, str(script), str(source), "--outfile", str(tmp), "--outtype", outtype,
           *extra_args]
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, errors="replace")
        stderr = _wait(proc, cancel)
        if proc.returncode != 0:
            raise _failure(source, stderr)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _wait(proc: subprocess.Popen, cancel: threading.Event | None) -> str:
    """Wait for the converter, killing it when ``cancel`` is set; its stderr."""
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        if cancel is not None and cancel.wait(0.1):
            proc.kill()
            proc.wait()
            reader.join()
            raise Cancelled("GGUF conversion cancelled")
        elif cancel is None:
            proc.wait()
    reader.join()
    return "".join(out)


def _failure(source: Path, stderr: str) -> Exception:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else "no message"
    if "No space left on device" in stderr:
        return OutOfResources(f"disk full while converting {source} to GGUF")
    return BadInput(f"llama.cpp's converter cannot convert {source}: {last}")
