"""Reading a GGUF file written by llama.cpp's converter and writing a new one
from it, tensor by tensor: the metadata (tokenizer, chat template, hyper-
parameters) is copied, qdesk's keys are added, and each tensor is either copied,
converted to a dense type, or replaced by prepared blocks.

gguf-py's writer is a state machine (header -> metadata -> tensor infos ->
data); qdesk declares every tensor first and then streams the data one tensor
at a time, so memory holds one tensor, never the model.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdesk.core.errors import BadInput, OutOfResources

DENSE_TYPES = ("F32", "F16", "BF16", "Q8_0")


def open_reader(path: Path):
    """The GGUF file at ``path`` (``gguf_source.GGUFSource``). Raises BadInput."""
    from qdesk.core.export.gguf_source import GGUFSource

    return GGUFSource(path)


def ggml_type(name: str):
    import gguf

    try:
        return gguf.GGMLQuantizationType[name]
    except KeyError:
        raise BadInput(f"unknown GGUF tensor type '{name}'") from None


def tensor_rows(t) -> np.ndarray:
    """A reader tensor's values as float32 (rows over every leading dim, ne0)."""
    import gguf

    data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape(-1, int(t.shape[0]))


def field_value(reader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def dense_type_for(name: str, n_dims: int, want: str) -> str:
    """The type llama.cpp's converter gives a tensor it does not quantize: norms,
    1-D tensors, biases and MoE routers stay F32 (convert_hf_to_gguf's
    ``prepare_tensors`` rule for the tensor kinds qdesk's families have)."""
    if n_dims <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return "F32"
    if ".ffn_gate_inp" in name:
        return "F32"
    return want


def encode_dense(values: np.ndarray, type_name: str) -> np.ndarray:
    """float32 values (numpy shape) -> the bytes of ``type_name`` in gguf-py's layout."""
    import gguf

    q = gguf.quants.quantize(np.ascontiguousarray(values, dtype=np.float32), ggml_type(type_name))
    return np.ascontiguousarray(q)


@dataclass(frozen=True)
class TensorOut:
    """One tensor of the file to write: ``shape`` in numpy order (ggml's ne
    reversed), ``make()`` returns its bytes (any dtype, ``nbytes`` long)."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    nbytes: int
    make: Callable[[], np.ndarray]


def type_nbytes(shape: tuple[int, ...], type_name: str) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[ggml_type(type_name)]
    n = 1
    for d in shape:
        n *= int(d)
    if shape[-1] % block:
        raise BadInput(f"a row of {shape[-1]} values is not whole {type_name} blocks of {block}")
    return n // block * size


def copied(t) -> TensorOut:
    """A reader tensor written unchanged."""
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    return TensorOut(t.name, shape, t.tensor_type.name, int(t.n_bytes), lambda: np.asarray(t.data))


def converted(t, type_name: str) -> TensorOut:
    """A reader tensor converted to a dense type."""
    if t.tensor_type.name == type_name:
        return copied(t)
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    return TensorOut(t.name, shape, type_name, type_nbytes(shape, type_name),
                     lambda: encode_dense(tensor_rows(t).reshape(shape), type_name))


def write_gguf(path: Path, reader, tensors: list[TensorOut], extra: dict[str, object],
               file_type: int | None = None) -> Iterator[int]:
    """Write ``path`` with ``reader``'s metadata (``general.file_type`` replaced
    by ``file_type`` when given), the ``extra`` keys (str, int, float, bool or
    a list of str) and ``tensors`` in order; yields each tensor's index after
    writing it. Raises OutOfResources when the disk fills."""
    import gguf

    arch = field_value(reader, "general.architecture")
    writer = gguf.GGUFWriter(str(path), arch)
    try:
        alignment = field_value(reader, "general.alignment")
        if alignment:
            writer.data_alignment = int(alignment)
        for field in reader.fields.values():
            if field.name == "general.architecture" or field.name.startswith("GGUF."):
                continue
            if field.name in extra or (file_type is not None and field.name == "general.file_type"):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
        if file_type is not None:
            writer.add_uint32("general.file_type", int(file_type))
        for key, value in extra.items():
            _add_value(writer, key, value)
        for t in tensors:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes,
                                   raw_dtype=ggml_type(t.type_name))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, t in enumerate(tensors):
            data = t.make()
            if data.nbytes != t.nbytes:
                raise BadInput(f"{t.name}: {data.nbytes} bytes made for a {t.nbytes}-byte tensor")
            writer.write_tensor_data(data)
            yield i
        writer.flush()
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OutOfResources(f"disk full writing {path}") from None
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        writer.close()


def write_gguf_plain(path: Path, arch: str, kv: dict[str, object],
                     tensors: list[tuple[str, np.ndarray]]) -> None:
    """A small GGUF of plain float32/float16 arrays (the imatrix file)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    try:
        for key, value in kv.items():
            _add_value(writer, key, value)
        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OutOfResources(f"disk full writing {path}") from None
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        writer.close()


def _add_value(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int) and value >= 0:
        writer.add_uint32(key, value)
    elif isinstance(value, int):
        writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        writer.add_array(key, list(value))
    else:
        raise TypeError(f"GGUF metadata {key}: cannot store {type(value).__name__}")
