"""How much memory a model will take before it is loaded, against what is free.

Cheap and safe to call on the GUI thread: it reads file sizes and safetensors
headers (untrusted input, so every size is checked and any surprise means "not
known"), never imports torch, and never loads the model.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from qdesk.core.errors import QdeskError
from qdesk.core.models import available_memory_bytes, demo_dense_dir, demo_gguf_path, resolve

_HEADER_CAP = 100 * 2**20  # a safetensors header larger than this is not a model we know
_OVERHEAD = 256 * 2**20  # what the transformers backend needs besides the weights


@dataclass(frozen=True)
class LoadEstimate:
    """``need_bytes`` None: not known before loading (``basis`` says why)."""

    need_bytes: int | None
    free_bytes: int
    device: str
    basis: str  # e.g. "135M parameters in float32", "GGUF file size"

    @property
    def fits(self) -> bool | None:
        return None if self.need_bytes is None else self.need_bytes <= self.free_bytes


def _device() -> str:
    torch = sys.modules.get("torch")  # only if already loaded: never import it for a label
    try:
        return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def safetensors_parameters(path: Path) -> int:
    """The number of values in one safetensors file, from its header alone."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("truncated")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_HEADER_CAP, size - 8):
            raise ValueError("header larger than the file")
        header = json.loads(f.read(n))
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in entry["shape"]:
            if not isinstance(d, int) or d < 0:
                raise ValueError("bad shape")
            count *= d
        total += count
    return total


def _folder_parameters(folder: Path) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    try:
        return sum(safetensors_parameters(f) for f in files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def estimate_load(text: str, backend: str = "auto") -> LoadEstimate:
    """The estimate for a model argument (demo, folder, .gguf, hub id).

    The transformers backend holds every weight densely, in float32 on a CPU
    that prefers it (bfloat16 halves that): the estimate is the float32 figure
    plus the backend's overhead, so it errs on the safe side. llama.cpp maps
    the GGUF file: its size plus a little for the context.
    """
    device = _device()
    free = available_memory_bytes(device)
    try:
        ref = resolve(text)
    except QdeskError as e:
        return LoadEstimate(None, free, device, str(e))
    bytes_per = 2 if device == "cuda" else 4
    dtype = "bfloat16" if device == "cuda" else "float32"
    if ref.kind == "hub":
        return LoadEstimate(None, free, device, "known once downloaded")
    if ref.kind == "demo":
        if backend == "llamacpp":
            try:
                gguf = demo_gguf_path()
            except QdeskError as e:
                return LoadEstimate(None, free, device, str(e))
            return LoadEstimate(_gguf_need(gguf), free, device, "GGUF file size")
        folder = demo_dense_dir()
        params = _folder_parameters(folder) if folder.is_dir() else None
        if params is None:
            return LoadEstimate(None, free, device, "known once the demo is prepared")
    elif ref.kind == "gguf":
        if backend in ("auto", "llamacpp"):
            return LoadEstimate(_gguf_need(ref.path), free, device, "GGUF file size")
        return LoadEstimate(None, free, device, "known once the dense copy is made")
    elif ref.kind == "qdesk":  # packed codes load dense: count the original weights
        params = _recipe_parameters(ref.path) or _folder_parameters(ref.path)
        if params is None:
            return LoadEstimate(None, free, device, "no readable qdesk.json")
    else:
        params = _folder_parameters(ref.path)
        if params is None:
            return LoadEstimate(None, free, device, "no readable safetensors header")
    need = int(params * bytes_per * 1.15) + _OVERHEAD
    return LoadEstimate(need, free, device, f"{params / 1e6:,.0f}M parameters in {dtype}")


def _recipe_parameters(folder: Path) -> int | None:
    try:
        value = json.loads((folder / "qdesk.json").read_text(encoding="utf-8")).get("parameters")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _gguf_need(path: Path) -> int:
    return int(os.path.getsize(path) * 1.05) + 128 * 2**20
