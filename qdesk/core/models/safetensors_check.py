"""Check a .safetensors file's header before any library reads it.

The header is untrusted: its length, JSON, dtypes and offsets are checked
against the file size, so a truncated or garbage file is one clear error.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from qdesk.core.errors import BadInput

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor records of a safetensors file, validated. Raises BadInput."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadInput(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise BadInput(f"{path}: damaged or truncated safetensors file (bad header length)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInput(f"{path}: damaged safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise BadInput(f"{path}: damaged safetensors file (its header is not a table)")
    data_size = size - 8 - n
    tensors = {}
    for name, rec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = rec["dtype"], rec["shape"], rec["data_offsets"]
            numel = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError
                numel *= d
            width = _DTYPE_BYTES[dtype]
            ok = isinstance(start, int) and isinstance(end, int) and 0 <= start <= end
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{path}: damaged safetensors file (bad record for {name!r})") from None
        if not ok or end > data_size:
            raise BadInput(f"{path}: truncated safetensors file (tensor {name} ends past the file)")
        if dtype not in ("F4", "F6_E2M3", "F6_E3M2") and end - start != numel * width:
            raise BadInput(f"{path}: damaged safetensors file (tensor {name} has the wrong size)")
        tensors[name] = rec
    return tensors
