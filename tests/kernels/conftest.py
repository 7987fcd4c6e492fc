"""Kernel tests run the Triton kernels on the GPU when there is one, else on the
CPU under Triton's interpreter (set before any kernel module is imported)."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
