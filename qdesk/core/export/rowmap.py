"""Which source rows a GGUF tensor holds, found by content.

llama.cpp's converter renames tensors, stacks experts and, for llama-style
architectures, reorders the rows of q and k for its rotary layout. Rather than
a name and permutation table per family, qdesk lets the converter write the
dense model and then finds, for every GGUF tensor, the source row each of its
rows is: rows are matched by their exact float32 bits. The map tells the exact
writer where each row's codes are and the importance matrix which Linear's
inputs a tensor sees; a tensor only some of whose rows match means the
converter did more than reorder rows, and no exact export is possible.

A row's fingerprint is the sum, modulo 2^64, of its values' bit patterns times
fixed odd random multipliers: equal rows always agree, and every match is
checked value for value afterwards (``RowSource.check``), so a collision cannot
pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from qdesk.core.errors import BadInput

_CHUNK_ELEMENTS = 1 << 23  # rows fingerprinted at a time: ~64 MiB of uint64 products


def _multipliers(width: int) -> np.ndarray:
    rng = np.random.default_rng(0x9D5C_0E11 + width)
    return rng.integers(1, 2**63, size=width, dtype=np.uint64) | np.uint64(1)


def fingerprints(rows: np.ndarray) -> np.ndarray:
    """(n, width) float32 -> (n,) uint64, from the exact bit patterns."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n, width = rows.shape
    mult = _multipliers(width)
    out = np.empty(n, dtype=np.uint64)
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    with np.errstate(over="ignore"):
        for i in range(0, n, step):
            bits = rows[i : i + step].view(np.uint32).astype(np.uint64)
            out[i : i + step] = (bits * mult).sum(axis=1, dtype=np.uint64)
    return out


@dataclass(frozen=True)
class RowSource:
    """GGUF tensor ``tensor``'s rows (flattened over experts) are, in order,
    row ``rows[i]`` of source ``sources[which[i]]``."""

    tensor: str
    sources: tuple[str, ...]
    which: np.ndarray  # (n_rows,) int32
    rows: np.ndarray  # (n_rows,) int64

    def rows_of(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the tensor, rows in source k) of source k's rows."""
        pos = np.nonzero(self.which == k)[0]
        return pos, self.rows[pos]

    def check(self, gguf_rows: np.ndarray, source: Callable[[str], np.ndarray]) -> None:
        """Raise BadInput unless every row equals its source row bit for bit."""
        for k, name in enumerate(self.sources):
            pos, rows = self.rows_of(k)
            if not np.array_equal(gguf_rows[pos].view(np.uint32), source(name)[rows].view(np.uint32)):
                raise BadInput(f"GGUF tensor {self.tensor}: its rows are not {name}'s values "
                               "(llama.cpp's converter changed them): no exact export")


class RowIndex:
    """Fingerprints of every row of the source matrices, by width."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(self, name: str, matrix: np.ndarray) -> None:
        """One source, (rows, width) float32 (a 3-D stack is read as its rows)."""
        m = np.asarray(matrix, dtype=np.float32)
        m = m.reshape(-1, m.shape[-1])
        k = len(self.names)
        self.names.append(name)
        fp = fingerprints(m)
        self._parts.setdefault(m.shape[1], []).append(
            (fp, np.full(fp.size, k, dtype=np.int32), np.arange(fp.size, dtype=np.int64)))
        self._tables.pop(m.shape[1], None)

    def _table(self, width: int):
        if width not in self._tables:
            fp, which, rows = (np.concatenate(x) for x in zip(*self._parts[width]))
            order = np.argsort(fp, kind="stable")
            self._tables[width] = (fp[order], which[order], rows[order])
        return self._tables[width]

    def widths(self) -> set[int]:
        return set(self._parts)

    def find(self, tensor: str, rows: np.ndarray) -> RowSource | None:
        """The sources of a GGUF tensor's rows (n, width) float32; None when no
        row is a source row; BadInput when only some are."""
        rows = rows.reshape(-1, rows.shape[-1])
        width = rows.shape[1]
        if width not in self._parts:
            return None
        fp_t, which_t, rows_t = self._table(width)
        fp = fingerprints(rows)
        pos = np.searchsorted(fp_t, fp).clip(0, fp_t.size - 1)
        hit = fp_t[pos] == fp
        if not hit.any():
            return None
        if not hit.all():
            raise BadInput(f"GGUF tensor {tensor}: {int(hit.sum())} of {hit.size} rows are rows of "
                           "a quantized layer and the rest are not: llama.cpp's converter "
                           "changed it beyond reordering rows; no exact export")
        which, src_rows = which_t[pos], rows_t[pos]
        uniq, first = np.unique(which, return_index=True)
        used = uniq[np.argsort(first)]  # sources in the order their rows first appear
        renum = np.zeros(len(self.names), dtype=np.int32)
        renum[used] = np.arange(used.size, dtype=np.int32)
        return RowSource(tensor, tuple(self.names[k] for k in used.tolist()), renum[which],
                         src_rows)


def map_tensors(index: RowIndex, tensors: Iterable[tuple[str, np.ndarray]]) -> dict[str, RowSource]:
    """GGUF tensor name -> its RowSource, for the tensors made of source rows."""
    found = {}
    for name, rows in tensors:
        if rows.ndim < 2 or rows.shape[-1] not in index.widths():
            continue
        rs = index.find(name, rows)
        if rs is not None:
            found[name] = rs
    return found
