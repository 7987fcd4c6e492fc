"""Tiny models of every family as HF folders llama.cpp's converter accepts, and
qdesk checkpoints of them, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_helpers import random_calibration
from families import converter_folder


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory):
    """family_folder(family) -> a tiny bf16 HF folder of that family."""
    root = tmp_path_factory.mktemp("export-families")
    made: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in made:
            made[family] = converter_folder(family, root / family)
        return made[family]

    return make


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, family_folder):
    """checkpoint(family, method, bits, group_size, symmetric, plan=None) -> a qdesk
    checkpoint folder of the tiny family model."""
    root = tmp_path_factory.mktemp("export-checkpoints")
    made: dict[tuple, Path] = {}

    def make(family="llama", method="rtn", bits=4, group_size=32, symmetric=True, plan=None,
             **options) -> Path:
        key = (family, method, bits, group_size, symmetric, plan, tuple(sorted(options.items())))
        if key not in made:
            from qdesk.core.models import open_model
            from qdesk.core.quant.configs import make_config
            from qdesk.core.quant.plans import load_plan
            from qdesk.core.quant.steps import run_quantize

            loaded = open_model(str(family_folder(family)), backend="hf", dtype="float32")
            name = "-".join(str(k) for k in key[:5]) + "".join(f"-{k}{v}" for k, v in key[6])
            out = root / f"{len(made)}-{name}" / "ckpt"
            out.parent.mkdir(parents=True)
            config = make_config(method, bits=bits, group_size=group_size, symmetric=symmetric,
                                 **options)
            vocab = int(loaded.model.config.vocab_size)
            run_quantize(loaded, config, load_plan(plan) if plan else None,
                         random_calibration(vocab), output_dir=out)
            loaded.close()
            made[key] = out
        return made[key]

    return make


@pytest.fixture
def open_hf():
    """open_hf(path) -> a LoadedModel in float32, closed after the test."""
    from qdesk.core.models import open_model

    opened = []

    def load(path):
        m = open_model(str(path), backend="hf", dtype="float32")
        opened.append(m)
        return m

    yield load
    for m in opened:
        m.close()
