"""Finding a GGUF tensor's rows among the source rows by content."""

from __future__ import annotations

import numpy as np
import pytest

from qdesk.core.errors import BadInput
from qdesk.core.export.rowmap import RowIndex, fingerprints


def _index(**mats):
    index = RowIndex()
    for name, m in mats.items():
        index.add(name, m)
    return index


def test_permuted_rows_and_fused_tensors_are_found():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((n, 16)).astype(np.float32) for n in (8, 4, 4))
    index = _index(q=q, k=k, v=v)
    perm = rng.permutation(8)
    rs = index.find("attn_q", q[perm])
    assert rs.sources == ("q",) and list(rs.rows) == list(perm)
    fused = np.concatenate([q, k, v])  # a converter's fused qkv
    rs = index.find("attn_qkv", fused)
    assert rs.sources == ("q", "k", "v")
    pos, rows = rs.rows_of(1)
    assert list(pos) == list(range(8, 12)) and list(rows) == [0, 1, 2, 3]
    rs.check(fused, {"q": q, "k": k, "v": v}.__getitem__)


def test_a_changed_tensor_is_refused_and_a_foreign_one_ignored():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 16)).astype(np.float32)
    index = _index(w=w)
    assert index.find("other", rng.standard_normal((6, 16)).astype(np.float32)) is None
    changed = w.copy()
    changed[2] += 1.0  # the converter did more than reorder rows
    with pytest.raises(BadInput, match="beyond reordering rows"):
        index.find("w", changed)
    assert index.find("narrow", w[:, :8]) is None  # another width: not a candidate


def test_check_catches_a_row_that_only_shares_a_fingerprint():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    rs = _index(w=w).find("w", w)
    other = w.copy()
    other[1, 3] = np.nextafter(other[1, 3], np.float32(9))  # one ulp off
    with pytest.raises(BadInput, match="not w's values"):
        rs.check(other, {"w": w}.__getitem__)


def test_fingerprints_are_exact_bit_patterns():
    a = np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    fp = fingerprints(a)
    assert fp[0] == fp[2] and fp[0] != fp[1]  # -0.0 is another bit pattern
