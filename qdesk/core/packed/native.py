"""qdesk's own CPU kernels (``qdesk_kernels.cpu``) as core uses them: built once
per machine into the data folder's ``native`` folder."""

from __future__ import annotations

import ctypes

from qdesk_kernels import cpu

why_not = cpu.why_not
ABI = cpu.ABI


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (``why_not()`` says why)."""
    from qdesk.core.paths import data_dir

    return cpu.library(data_dir() / "native")


def simd() -> str:
    """"avx512", "avx2" or "portable" for the loaded build, "" when there is none."""
    return cpu.simd(library())
