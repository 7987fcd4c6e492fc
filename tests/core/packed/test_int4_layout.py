"""torch's CPU int4 byte layout: qdesk's packing equals torch's own, for the
layout this CPU dispatches to and (in child processes) for the AVX2 and
portable kernels."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from qdesk.core.packed.int4_layout import CANDIDATES, int4_op_available, native_layout, torch_pack

needs_op = pytest.mark.skipif(not int4_op_available(), reason="this torch has no CPU int4 op")


@pytest.mark.parametrize("layout", CANDIDATES, ids=lambda lay: f"{lay.pairing}{lay.block}")
def test_unpack_inverts_pack(layout):
    g = torch.Generator().manual_seed(1)
    u = torch.randint(0, 16, (layout.block * 3, 96), generator=g, dtype=torch.uint8)
    packed = layout.pack(u)
    assert packed.shape == (layout.block * 3, 48) and packed.dtype == torch.uint8
    assert torch.equal(layout.unpack(packed), u)
    blocked = layout.unpack_blocked(packed)  # (blocks, K, block), rows in order
    assert torch.equal(blocked.transpose(1, 2).reshape(u.shape), u)


@needs_op
@pytest.mark.parametrize("n,k", [(64, 32), (192, 576), (1536, 64)])
def test_packing_equals_torch_on_this_cpu(n, k):
    layout = native_layout()
    assert layout is not None, "none of the known layouts matches this torch"
    n = -(-n // layout.block) * layout.block
    u = torch.randint(0, 16, (n, k), generator=torch.Generator().manual_seed(n + k), dtype=torch.int32)
    assert torch.equal(layout.pack(u), torch_pack(u))


_CHILD = """
import torch
from qdesk.core.packed.int4_layout import native_layout, torch_pack
layout = native_layout()
u = torch.randint(0, 16, (128, 96), dtype=torch.int32)
print(torch.backends.cpu.get_cpu_capability(), layout.block, layout.pairing,
      torch.equal(layout.pack(u), torch_pack(u)))
"""


@needs_op
@pytest.mark.parametrize("capability,expect", [("avx2", "AVX2 32 halves True"),
                                               ("default", "DEFAULT 32 pairs True")])
def test_other_cpu_kernels_are_recognised(capability, expect):
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == expect
