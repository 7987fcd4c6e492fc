"""qdesk's importance matrix for llama.cpp's quantizer, and its GGUF file.

For every Linear of the transformers model, the sum over calibration tokens of
x^2 per input column (x: the Linear's input), and how many tokens reached it;
llama.cpp divides one by the other (per-column mean of x^2) and weights each
weight's rounding error by it. The file is the GGUF imatrix format that
``llama-imatrix`` writes and ``llama-quantize --imatrix`` reads (tools/imatrix):
``general.type = "imatrix"``, ``imatrix.datasets`` (strings),
``imatrix.chunk_count`` and ``imatrix.chunk_size`` (uint32), and per GGUF
weight ``<name>.in_sum2`` (F32, (n_mat, in)) and ``<name>.counts`` (F32,
(n_mat, 1)); n_mat is 1 except for stacked experts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdesk.core.errors import BadInput
from qdesk.core.export.events import ExportProgress
from qdesk.core.export.rowmap import RowSource

DATASETS = "imatrix.datasets"
CHUNK_COUNT = "imatrix.chunk_count"
CHUNK_SIZE = "imatrix.chunk_size"


@dataclass(frozen=True)
class LinearStats:
    """Per transformers Linear: sum of x^2 per input column (float64) and tokens."""

    sums: dict[str, np.ndarray]
    tokens: dict[str, int]
    chunks: int
    chunk_size: int
    dataset: str


@dataclass(frozen=True)
class Imatrix:
    """Per GGUF weight: in_sum2 (n_mat, in) float32 and counts (n_mat,) float32."""

    entries: dict[str, tuple[np.ndarray, np.ndarray]]
    datasets: tuple[str, ...]
    chunk_count: int
    chunk_size: int


def describe_calibration(calibration) -> str:
    d = calibration.describe()
    return (f"qdesk:{d['name']} samples={d['samples']} tokens={d['tokens']} seed={d['seed']} "
            f"sha256={d['sha256'][:16]}")


def collect_steps(model, calibration) -> Iterator[ExportProgress]:
    """Run the calibration windows through ``model`` (a transformers causal LM)
    with a hook on every Linear; one event per window (the cancel point).
    Returns ``LinearStats`` (``StopIteration.value``)."""
    import torch

    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if not linears:
        raise BadInput("the model has no Linear layers to compute an importance matrix for")
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in linears.items()}
    tokens = dict.fromkeys(linears, 0)

    def hook_for(name: str, width: int):
        def hook(module, args):
            x = args[0].detach().reshape(-1, width).float()
            sums[name] += (x * x).sum(dim=0).double().cpu()
            tokens[name] += x.shape[0]
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n, m.in_features)) for n, m in linears.items()]
    device = next(model.parameters()).device
    ids = calibration.input_ids
    try:
        with torch.no_grad():
            for i in range(ids.shape[0]):
                model(input_ids=ids[i : i + 1].to(device), use_cache=False)
                yield ExportProgress("imatrix", i + 1, int(ids.shape[0]), f"window {i + 1}")
    finally:
        for h in handles:
            h.remove()
    for name, s in sums.items():
        if not torch.isfinite(s).all():
            raise BadInput(f"the importance matrix of {name} is not finite (the model overflows "
                           "on the calibration text)")
    return LinearStats({n: s.numpy() for n, s in sums.items()}, tokens, int(ids.shape[0]),
                       int(ids.shape[1]), describe_calibration(calibration))


def gguf_imatrix(stats: LinearStats, sources: dict[str, RowSource]) -> Imatrix:
    """The matrix keyed by GGUF weight names: each GGUF tensor takes the input
    statistics of the Linear its rows came from (``rowmap``); a stacked tensor
    (experts) one matrix per stacked slice."""
    entries = {}
    for gguf_name, rs in sources.items():
        names = [n for n in rs.sources if n in stats.sums]
        if not names:
            continue
        n_rows = rs.which.size
        per_source = {n: int((rs.which == k).sum()) for k, n in enumerate(rs.sources)}
        if len(names) == 1 or len(set(per_source.values())) != 1 or n_rows % len(rs.sources):
            # one input for the whole tensor (fused q/k/v share theirs)
            s = stats.sums[names[0]][None, :]
            c = np.array([stats.tokens[names[0]]], dtype=np.float32)
        else:  # stacked: slice j holds one source's rows
            s = np.stack([stats.sums[n] for n in rs.sources])
            c = np.array([stats.tokens[n] for n in rs.sources], dtype=np.float32)
        entries[gguf_name] = (s.astype(np.float32), c)
    if not entries:
        raise BadInput("no GGUF weight matched a Linear of the model: no importance matrix")
    return Imatrix(entries, (stats.dataset,), stats.chunks, stats.chunk_size)


def write_imatrix(path: Path, imatrix: Imatrix, arch: str, metadata: dict) -> None:
    """Write the GGUF imatrix file (the caller renames it into place)."""
    from qdesk.core.export.gguf_io import write_gguf_plain

    tensors = []
    for name, (s, c) in sorted(imatrix.entries.items()):
        tensors.append((f"{name}.in_sum2", np.ascontiguousarray(s, dtype=np.float32)))
        tensors.append((f"{name}.counts", np.ascontiguousarray(c.reshape(-1, 1), dtype=np.float32)))
    kv = {"general.type": "imatrix", DATASETS: list(imatrix.datasets),
          CHUNK_COUNT: int(imatrix.chunk_count), CHUNK_SIZE: int(imatrix.chunk_size), **metadata}
    write_gguf_plain(path, arch, kv, tensors)


def read_imatrix(path: Path) -> Imatrix:
    """An imatrix GGUF (qdesk's or llama-imatrix's), checked: every weight has
    both F32 parts of matching sizes, the metadata is there."""
    from qdesk.core.export.gguf_io import field_value, open_reader

    reader = open_reader(path)
    if field_value(reader, "general.type") != "imatrix":
        raise BadInput(f"{path}: not an importance matrix file (general.type is not imatrix)")
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.tensor_type.name != "F32":
            raise BadInput(f"{path}: {t.name} is {t.tensor_type.name}, not F32")
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.array(t.data, dtype=np.float32)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.array(t.data, dtype=np.float32).reshape(-1)
    if not sums or set(sums) != set(counts):
        raise BadInput(f"{path}: its in_sum2 and counts tensors do not pair up")
    entries = {}
    for name, s in sums.items():
        c = counts[name]
        s = s.reshape(c.size, -1) if s.size % max(1, c.size) == 0 else None
        if s is None or not np.isfinite(s).all() or not np.isfinite(c).all():
            raise BadInput(f"{path}: the entry for {name} is damaged")
        entries[name] = (s, c)
    datasets = field_value(reader, DATASETS)
    chunks, size = field_value(reader, CHUNK_COUNT), field_value(reader, CHUNK_SIZE)
    if not datasets or chunks is None or size is None:
        raise BadInput(f"{path}: the importance matrix has no dataset or chunk metadata")
    return Imatrix(entries, tuple(datasets), int(chunks), int(size))
