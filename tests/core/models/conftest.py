"""Session fixtures: tiny GGUF files of every family (gguf_tiny_files.py) and a data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from families import tiny_folder
from gguf_tiny_files import SPM_FAMILIES, spm_folder, train_spm_tokenizer


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """tiny_gguf(family, outtype="bf16") -> the path of a tiny GGUF file of that family."""
    from qdesk.core.models.hf_to_gguf import convert_hf_folder

    root = tmp_path_factory.mktemp("tiny-gguf")
    made: dict[tuple[str, str], Path] = {}

    def make(family: str, outtype: str = "bf16") -> Path:
        """family: one of FAMILIES, or "<family>-spm" / "granite-spm" / "llama3rope-spm"
        for the 512-piece SentencePiece vocabulary."""
        key = (family, outtype)
        if key not in made:
            folder = root / family
            base = family.removesuffix("-spm")
            if not folder.exists():
                if base in SPM_FAMILIES or family.endswith("-spm"):
                    family = base
                    gemma = family.startswith("gemma")
                    spm = root / ("spm-gemma.model" if gemma else "spm.model")
                    if not spm.exists():
                        train_spm_tokenizer(spm, gemma)
                    spm_folder(family, folder, spm)
                else:
                    tiny_folder(family, folder)
            made[key] = convert_hf_folder(folder, root / f"{folder.name}-{outtype}.gguf", outtype)
        return made[key]

    return make


@pytest.fixture(scope="session")
def gguf_data_dir(tmp_path_factory):
    """A data folder of its own for dense copies and probe verdicts of the tiny files."""
    return tmp_path_factory.mktemp("qdesk-data")
