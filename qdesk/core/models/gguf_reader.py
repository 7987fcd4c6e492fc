"""Parse a GGUF file's header (metadata and tensor table) as untrusted input.

Every length, count, type and offset is checked against the file before it is
used, and any failure is one ``BadInput`` line naming the file. Nothing here
touches tensor data. The layout (GGUF v2/v3, little-endian) is the one ggml's
``gguf.cpp`` reads; the type constants come from gguf-py.

gguf-py's own ``GGUFReader`` builds a numpy view for every string of the
vocabulary and the merge table, which takes 1.7 s on the demo's header alone;
this reader keeps only what qdesk checks (the vocabulary as bytes, counts for
the other string arrays) and reads the same header in about 0.1 s.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from qdesk.core.errors import BadInput

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_KEY_BYTES = 1 << 16
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types (gguf.cpp's gguf_type)
_SCALARS = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9
INT_TYPES = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
FLOAT_TYPES = frozenset({6, 12})
BOOL_TYPE = 7
# String arrays kept in full (as bytes); every other string array is kept as its length.
KEPT_STRING_ARRAYS = frozenset({"tokenizer.ggml.tokens"})


@dataclass(frozen=True)
class Value:
    """One metadata value: ``type`` is the GGUF type, ``item`` the element type of an array.

    ``data`` is an int, float, bool or str for a scalar; a tuple for a numeric
    array or a kept string array (bytes); the element count for other string arrays.
    """

    type: int
    data: object
    item: int | None = None

    @property
    def is_array(self) -> bool:
        return self.type == _ARRAY

    @property
    def length(self) -> int:
        if not self.is_array:
            return 1
        return self.data if isinstance(self.data, int) else len(self.data)


@dataclass(frozen=True)
class TensorRecord:
    """One entry of the tensor table. ``shape`` is in PyTorch order (slowest first)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int  # from the start of the data section
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Value]
    tensors: tuple[TensorRecord, ...]
    data_start: int
    file_size: int


class _Cursor:
    """Reads little-endian values from a buffer, refusing to read past its end."""

    def __init__(self, buf, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def damaged(self, what: str) -> BadInput:
        return BadInput(f"{self.path}: damaged GGUF file ({what})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise BadInput(f"{self.path}: truncated or damaged GGUF file ({what} runs past the end)")

    def unpack(self, fmt: str, size: int, what: str):
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"the length of {what}")
        self.need(n, what)
        b = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return b

    def skip_string(self, what: str) -> None:
        n = self.u64(f"the length of {what}")
        self.need(n, what)
        self.pos += n

    def text(self, what: str, limit: int | None = None) -> str:
        b = self.raw_string(what)
        if limit is not None and len(b) > limit:
            raise self.damaged(f"{what} is {len(b)} bytes long")
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise self.damaged(f"{what} is not UTF-8") from None


def read_gguf(path: str | os.PathLike, all_strings: bool = False) -> GGUFFile:
    """Parse and check the header of the GGUF file at ``path``. Raises BadInput.

    ``all_strings``: keep every string array (as bytes), not only
    KEPT_STRING_ARRAYS (what copying the metadata to a new file needs)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                magic = f.read(4)
                if magic != GGUF_MAGIC:
                    raise BadInput(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
                raise BadInput(f"{path}: truncated GGUF file ({size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(memoryview(buf), path, size, all_strings)
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror or e})") from None


def _parse(buf: memoryview, path: Path, size: int, all_strings: bool = False) -> GGUFFile:
    cur = _Cursor(buf, path)
    try:
        return _parse_at(cur, path, size, all_strings)
    finally:
        buf.release()


def _parse_at(cur: _Cursor, path: Path, size: int, all_strings: bool = False) -> GGUFFile:
    if bytes(cur.buf[:4]) != GGUF_MAGIC:
        raise BadInput(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    cur.pos = 4
    version = cur.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        raise BadInput(
            f"{path}: damaged GGUF file or unsupported version (version {version}; "
            "qdesk reads versions 2 and 3)"
        )
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    if n_tensors > MAX_TENSORS:
        raise cur.damaged(f"it claims {n_tensors} tensors")
    if n_kv > MAX_KV:
        raise cur.damaged(f"it claims {n_kv} metadata entries")

    metadata: dict[str, Value] = {}
    for i in range(n_kv):
        key = cur.text(f"metadata key {i}", limit=MAX_KEY_BYTES)
        if key in metadata:
            raise cur.damaged(f"metadata key {key} appears twice")
        metadata[key] = _read_value(cur, key, all_strings)

    tensors = []
    names: set[str] = set()
    for i in range(n_tensors):
        tensors.append(_read_tensor_record(cur, i, names))

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        v = metadata["general.alignment"]
        if v.type not in INT_TYPES or not (0 < v.data <= 1 << 20) or v.data & (v.data - 1):
            raise cur.damaged(f"general.alignment is {v.data!r}, not a power of two")
        alignment = int(v.data)
    data_start = (cur.pos + alignment - 1) // alignment * alignment
    for t in tensors:
        if t.offset % alignment:
            raise cur.damaged(f"tensor {t.name} is not aligned to {alignment} bytes")
        if data_start + t.offset + t.n_bytes > size:
            raise BadInput(f"{path}: truncated GGUF file (tensor {t.name} ends past the end of the file)")
    _check_no_overlap(tensors, cur)
    return GGUFFile(path, version, metadata, tuple(tensors), data_start, size)


def _read_value(cur: _Cursor, key: str, all_strings: bool = False) -> Value:
    vtype = cur.u32(f"the type of {key}")
    if vtype in _SCALARS:
        fmt, width = _SCALARS[vtype]
        return Value(vtype, cur.unpack(fmt, width, key))
    if vtype == _STRING:
        return Value(vtype, cur.text(key))
    if vtype != _ARRAY:
        raise cur.damaged(f"metadata {key} has unknown type {vtype}")
    item = cur.u32(f"the element type of {key}")
    count = cur.u64(f"the length of {key}")
    if item in _SCALARS:
        fmt, width = _SCALARS[item]
        cur.need(count * width, key)
        data = struct.unpack_from(f"<{count}{fmt[1]}", cur.buf, cur.pos) if count else ()
        cur.pos += count * width
        return Value(vtype, tuple(data), item)
    if item == _STRING:
        # Each string is at least its 8-byte length: a count beyond that cannot be real.
        cur.need(count * 8, key)
        if all_strings or key in KEPT_STRING_ARRAYS:
            return Value(vtype, tuple(cur.raw_string(f"{key}[{i}]") for i in range(count)), item)
        for i in range(count):
            cur.skip_string(f"{key}[{i}]")
        return Value(vtype, count, item)
    raise cur.damaged(f"metadata {key} is an array of unsupported type {item}")


def _read_tensor_record(cur: _Cursor, index: int, names: set[str]) -> TensorRecord:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    name = cur.text(f"the name of tensor {index}", limit=MAX_TENSOR_NAME)
    if name in names:
        raise cur.damaged(f"tensor {name} appears twice")
    names.add(name)
    n_dims = cur.u32(f"the dimension count of {name}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.damaged(f"tensor {name} has {n_dims} dimensions")
    dims = [cur.u64(f"the shape of {name}") for _ in range(n_dims)]
    type_id = cur.u32(f"the type of {name}")
    offset = cur.u64(f"the offset of {name}")
    if any(d < 1 or d > 1 << 40 for d in dims):
        raise cur.damaged(f"tensor {name} has shape {tuple(reversed(dims))}")
    n_elements = 1
    for d in dims:
        n_elements *= d
    if n_elements > 1 << 48:
        raise cur.damaged(f"tensor {name} claims {n_elements} elements")
    try:
        qtype = GGMLQuantizationType(type_id)
        block, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise cur.damaged(f"tensor {name} has unknown ggml type {type_id}") from None
    if dims[0] % block:
        raise cur.damaged(f"tensor {name}: a row of {dims[0]} is not a whole number of {qtype.name} blocks")
    return TensorRecord(
        name=name, shape=tuple(reversed(dims)), type_id=type_id, type_name=qtype.name,
        offset=offset, n_elements=n_elements, n_bytes=n_elements // block * type_size,
    )


def _check_no_overlap(tensors: list[TensorRecord], cur: _Cursor) -> None:
    spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in tensors)
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise cur.damaged(f"tensors {name} and {other} overlap")
