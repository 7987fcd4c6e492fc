"""Copies of a GGUF file with some metadata or tensors changed (gguf-py's reader and writer).

Tests use it to make the bad files a user might bring: a NaN epsilon, an absurd
count, a missing key, a duplicated token, a tensor of the wrong shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

KEEP = object()


def rewrite(
    src: Path,
    dst: Path,
    set_fields: dict[str, tuple] | None = None,
    drop: tuple[str, ...] = (),
    arch: str | None = None,
    tensor_filter: Callable[[str], bool] | None = None,
) -> Path:
    """Copy ``src`` to ``dst``; ``set_fields`` maps a key to (GGUFValueType, value[, sub type]).

    ``arch`` replaces general.architecture (and renames the ``{arch}.*`` keys);
    ``tensor_filter(name)`` False leaves a tensor out.
    """
    import gguf

    reader = gguf.GGUFReader(src)
    old_arch = reader.fields["general.architecture"].contents()
    new_arch = arch or old_arch
    writer = gguf.GGUFWriter(str(dst), new_arch, endianess=reader.endianess)
    changes = dict(set_fields or {})
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop:
            continue
        if name.startswith(old_arch + "."):
            name = new_arch + name[len(old_arch):]
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        if name in changes:
            vtype, value, *rest = changes.pop(name)
            sub = rest[0] if rest else sub
        else:
            value = field.contents()
        writer.add_key_value(name, value, vtype, sub_type=sub)
    for name, (vtype, value, *rest) in changes.items():
        writer.add_key_value(name, value, vtype, sub_type=rest[0] if rest else None)
    tensors = [t for t in reader.tensors if tensor_filter is None or tensor_filter(t.name)]
    for t in tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        writer.write_tensor_data(np.asarray(t.data), tensor_endianess=reader.endianess)
    writer.close()
    return dst
