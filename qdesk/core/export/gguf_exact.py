"""GGUF with exactly a qdesk checkpoint's weights (Q4_0 / Q5_0 / Q8_0 blocks).

1. Decide each quantized Linear's exact type (``exact.exact_type``); refuse,
   naming the layer and the nearest choice, before any work is done.
2. Write the checkpoint's dequantized model as a float32 HF folder and let
   llama.cpp's own converter turn it into an F32 GGUF: tokenizer, chat template,
   special tokens, hyper-parameters, tensor names and row layout (q/k rotary
   permutation, expert stacking) are the converter's, for every family it knows.
3. Find each GGUF tensor's rows among the quantized Linears' rows by content
   (``rowmap``), check them value for value, and write the final file: those
   tensors as blocks built from the codes and scales in the GGUF's row order,
   the others in the chosen dense type.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qdesk.core.errors import BadInput
from qdesk.core.export.checkpoint_source import QdeskCheckpoint, write_dense_folder
from qdesk.core.export.events import ExportProgress
from qdesk.core.export.exact import ExactType, encode, exact_type
from qdesk.core.export.gguf_io import (
    TensorOut,
    converted,
    dense_type_for,
    open_reader,
    tensor_rows,
    type_nbytes,
    write_gguf,
)
from qdesk.core.export.rowmap import RowIndex, RowSource

# llama_ftype of a file whose quantized tensors are mostly of this type
FILE_TYPES = {"Q4_0": 2, "Q8_0": 7, "Q5_0": 8, "F32": 0, "F16": 1, "BF16": 32}


def exact_plan(ckpt: QdeskCheckpoint, widen: bool) -> dict[str, ExactType]:
    """Each quantized Linear's exact type; BadInput naming the layers that have none."""
    plan: dict[str, ExactType] = {}
    refused: dict[str, list[str]] = {}
    for name, fmt in ckpt.formats.items():
        in_features = _in_features(ckpt, name)
        choice = exact_type(fmt.bits, fmt.group_size, fmt.symmetric, fmt.float_zero,
                            in_features, widen)
        if choice.name is None:
            refused.setdefault(choice.reason, []).append(name)
        plan[name] = choice
    if refused:
        reason, names = next(iter(refused.items()))
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise BadInput(f"no exact GGUF export of {ckpt.folder.name}: {names[0]}{more}: {reason}")
    return plan


def _in_features(ckpt: QdeskCheckpoint, name: str) -> int:
    if ckpt.has(f"{name}.weight_shape"):
        return int(ckpt.tensor(f"{name}.weight_shape")[1])
    return int(ckpt.tensor(f"{name}.weight").shape[1])


def auto_dense_type(ckpt: QdeskCheckpoint) -> str:
    """The converter's "auto" rule on the checkpoint's unquantized 2-D tensors:
    bfloat16 -> BF16, float16 -> F16, otherwise F16."""
    import torch

    for name in ckpt.dense_names():
        t = ckpt.tensor(name)
        if t.ndim >= 2:
            return {torch.bfloat16: "BF16", torch.float16: "F16"}.get(t.dtype, "F16")
    return "F16"


class _Records:
    """Quantized Linears read on demand, one kept at a time."""

    def __init__(self, ckpt: QdeskCheckpoint) -> None:
        self.ckpt = ckpt
        self._name = None
        self._record = None

    def get(self, name: str):
        if name != self._name:
            self._name, self._record = name, self.ckpt.record(name)
        return self._record

    def values(self, name: str) -> np.ndarray:
        import torch

        return self.get(name).dequantize(torch.float32).numpy()


def _exact_tensor(t, rs: RowSource, records: _Records, plan: dict[str, ExactType],
                  stats: dict) -> TensorOut:
    types = {plan[n].name for n in rs.sources}
    # A tensor fused from rows of different formats: Q5_0 holds both 4-bit kinds.
    gtype = types.pop() if len(types) == 1 else ("Q5_0" if types <= {"Q4_0", "Q5_0"} else None)
    if gtype is None:
        raise BadInput(f"GGUF tensor {t.name} fuses layers of different widths "
                       f"({', '.join(rs.sources)}): no single exact type holds them")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    nbytes = type_nbytes(shape, gtype)

    def make() -> np.ndarray:
        gguf_rows = tensor_rows(t)
        rs.check(gguf_rows, records.values)
        out = np.empty((gguf_rows.shape[0], nbytes // gguf_rows.shape[0]), dtype=np.uint8)
        for k, name in enumerate(rs.sources):
            pos, rows = rs.rows_of(k)
            qw = records.get(name)
            zero = None if qw.zero is None else qw.zero.numpy()[rows]
            blocks, hs = encode(qw.q.numpy()[rows], qw.scale.float().numpy()[rows], zero,
                                qw.group_size, gtype)
            out[pos] = blocks
            stats["inexact_scales"] += hs.inexact
            stats["max_scale_rel_error"] = max(stats["max_scale_rel_error"], hs.max_rel_error)
        return out

    return TensorOut(t.name, shape, gtype, nbytes, make)


def exact_steps(ckpt: QdeskCheckpoint, work: Path, out_tmp: Path, dense_type: str,
                widen: bool, metadata: dict) -> Iterator[ExportProgress]:
    """Write the exact GGUF to ``out_tmp`` using ``work`` (a scratch folder,
    removed by the caller). Returns a summary dict (``StopIteration.value``)."""
    from qdesk.core.models.hf_to_gguf import convert_steps

    plan = exact_plan(ckpt, widen)
    if dense_type == "auto":
        dense_type = auto_dense_type(ckpt)
    dense_dir = work / "dequantized"
    names = ckpt.quantized
    for i, name in enumerate(write_dense_folder(ckpt, dense_dir), 1):
        yield ExportProgress("dequantize", i, len(names), name)
    f32 = work / "dequantized-f32.gguf"
    for p in convert_steps(dense_dir, f32, "f32"):
        yield ExportProgress("convert", p.done, p.total, p.name or p.stage)
    shutil.rmtree(dense_dir, ignore_errors=True)

    records = _Records(ckpt)
    index = RowIndex()
    for i, name in enumerate(names, 1):
        index.add(name, records.values(name))
        yield ExportProgress("map", i, len(names), name)
    reader = open_reader(f32)
    sources: dict[str, RowSource] = {}
    for t in reader.tensors:
        if len(t.shape) >= 2 and int(t.shape[0]) in index.widths():
            rs = index.find(t.name, tensor_rows(t))
            if rs is not None:
                sources[t.name] = rs
    used = {n for rs in sources.values() for n in rs.sources}
    lost = [n for n in names if n not in used]
    if lost:
        raise BadInput(f"llama.cpp's converter wrote no tensor with the rows of {lost[0]}"
                       + (f" and {len(lost) - 1} more" if len(lost) > 1 else "")
                       + ": no exact export")

    stats = {"inexact_scales": 0, "max_scale_rel_error": 0.0}
    tensors = []
    for t in reader.tensors:
        if t.name in sources:
            tensors.append(_exact_tensor(t, sources[t.name], records, plan, stats))
        else:
            tensors.append(converted(t, dense_type_for(t.name, len(t.shape), dense_type)))
    weight = Counter()
    for out in tensors:
        if out.name in sources:
            weight[out.type_name] += int(np.prod(out.shape))
    main = weight.most_common(1)[0][0]
    for i in write_gguf(out_tmp, reader, tensors, metadata, file_type=FILE_TYPES[main]):
        yield ExportProgress("write", i + 1, len(tensors), tensors[i].name)
    del reader
    widened = sorted(n for n, c in plan.items() if c.widened)
    return {
        "tensor_types": dict(Counter(t.type_name for t in tensors)),
        "exact_tensors": len(sources),
        "dense_type": dense_type,
        "widened": widened,
        **stats,
    }


def check_exact_weights(path: Path, ckpt: QdeskCheckpoint) -> Iterator[ExportProgress]:
    """Decode every quantized tensor of the written file with gguf-py's own
    dequantizer and compare it, row by row, with the checkpoint's weights.
    Returns (rows that differ, rows checked)."""
    records = _Records(ckpt)
    index = RowIndex()
    for name in ckpt.quantized:
        index.add(name, records.values(name))
    reader = open_reader(path)
    quantized = [t for t in reader.tensors if t.tensor_type.name in ("Q4_0", "Q5_0", "Q8_0")]
    differ = checked = 0
    for i, t in enumerate(quantized, 1):
        rows = tensor_rows(t)
        checked += rows.shape[0]
        try:
            rs = index.find(t.name, rows)
        except BadInput:
            rs = None
        if rs is None:
            differ += rows.shape[0]
        else:
            for k, name in enumerate(rs.sources):
                pos, src_rows = rs.rows_of(k)
                same = (rows[pos].view(np.uint32) == records.values(name)[src_rows].view(np.uint32))
                differ += int((~same.all(axis=1)).sum())
        yield ExportProgress("check", i, len(quantized), t.name)
    return differ, checked
