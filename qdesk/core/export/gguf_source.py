"""A GGUF file opened for reading by the export: its metadata fields and its
tensors with the attributes of gguf-py's ``GGUFReader`` that the export uses
(``fields``, ``get_field(key).contents()``, ``tensors`` with ``name``,
``tensor_type``, ``shape`` in ggml order, ``n_elements``, ``n_bytes``, ``data``),
parsed by qdesk's checked header reader (``core/models/gguf_reader``).

Why not gguf-py's reader: it builds a numpy view for every string of the
vocabulary and the merge table, about 1.7 s per open of the demo's header (an
export opens its files three or four times), and it trusts the header; this
one reads the same header in about 0.2 s and refuses a damaged one with one
``BadInput`` line. Tensor data is a read-only memory map, viewed as gguf-py
views it: float and integer types as their numpy dtype in numpy order, every
other type as rows of bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qdesk.core.errors import BadInput
from qdesk.core.models.gguf_reader import read_gguf

# The types gguf-py views as numbers; the rest (BF16 and the block types) as bytes.
_NUMPY_TYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
                "I16": np.int16, "I32": np.int32, "I64": np.int64}


class Field:
    """One metadata entry: ``types`` is [type] or [ARRAY, element type] (GGUFValueType)."""

    __slots__ = ("name", "types", "_value")

    def __init__(self, name: str, types: list, value) -> None:
        self.name, self.types, self._value = name, types, value

    def contents(self):
        return list(self._value) if isinstance(self._value, (list, tuple)) else self._value


class Tensor:
    __slots__ = ("name", "tensor_type", "shape", "n_elements", "n_bytes", "data_offset", "_file")

    def __init__(self, name, tensor_type, shape, n_elements, n_bytes, data_offset, file) -> None:
        self.name, self.tensor_type, self.shape = name, tensor_type, shape
        self.n_elements, self.n_bytes, self.data_offset = n_elements, n_bytes, data_offset
        self._file = file

    @property
    def data(self) -> np.ndarray:
        from gguf.quants import quant_shape_to_byte_shape

        dims = tuple(int(d) for d in reversed(self.shape.tolist()))
        dtype = _NUMPY_TYPES.get(self.tensor_type.name)
        if dtype is None:
            dtype, dims = np.uint8, quant_shape_to_byte_shape(dims, self.tensor_type)
        count = self.n_bytes // np.dtype(dtype).itemsize
        view = self._file.memmap()[self.data_offset:self.data_offset + self.n_bytes]
        return view.view(dtype)[:count].reshape(dims)


class GGUFSource:
    def __init__(self, path: Path) -> None:
        from gguf.constants import GGMLQuantizationType, GGUFValueType

        self.path = Path(path)
        header = read_gguf(self.path, all_strings=True)
        self._memmap = None
        self.fields: dict[str, Field] = {}
        for key, v in header.metadata.items():
            types = [GGUFValueType(v.type)] + ([GGUFValueType(v.item)] if v.is_array else [])
            value = v.data
            if v.is_array and v.item == GGUFValueType.STRING:
                value = [self._text(key, b) for b in v.data]
            self.fields[key] = Field(key, types, value)
        self.tensors = [
            Tensor(t.name, GGMLQuantizationType(t.type_id),
                   np.array(list(reversed(t.shape)), dtype=np.uint64), t.n_elements, t.n_bytes,
                   header.data_start + t.offset, self)
            for t in header.tensors
        ]

    def _text(self, key: str, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{self.path}: damaged GGUF file ({key} holds a string that is "
                           "not UTF-8)") from None

    def get_field(self, key: str) -> Field | None:
        return self.fields.get(key)

    def memmap(self) -> np.memmap:
        if self._memmap is None:
            self._memmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._memmap
