"""What the export tests share besides fixtures."""

from __future__ import annotations

# Small verification windows: tiny random models, a few seconds per export.
FAST = {"verify_ctx": 64, "verify_chunks": 2}


def random_calibration(vocab: int, n: int = 4, tokens: int = 32, seed: int = 0):
    import torch

    from qdesk.core.quant.calibration import CalibrationSet

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, tokens), generator=g)
    return CalibrationSet("random", ids, seed, "test")
