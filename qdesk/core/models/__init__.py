"""Models: references, opening (HF folder, GGUF, qdesk checkpoint, hub, demo),
dense materialization of GGUF files, header checks, device and dtype choice.

The public face of the package; other packages import from here. Importing it
loads no torch, transformers or llama.cpp (those load when a model opens).
"""

from qdesk.core.models import device
from qdesk.core.models.demo import DEMO_NAME, demo_dense_dir, demo_gguf_path, ensure_demo_model
from qdesk.core.models.device import cuda_available, gib
from qdesk.core.models.facts import LoadedModel, ModelFacts
from qdesk.core.models.opening import BACKENDS, check_model_folder, local_folder, open_model
from qdesk.core.models.refs import HUB_ID, ModelRef, resolve


def available_memory_bytes(kind: str) -> int:
    """Free memory on ``kind`` ("cpu" or "cuda"); looked up at call time so a
    test can stand in for the machine (``device.available_memory_bytes``)."""
    return device.available_memory_bytes(kind)


__all__ = [
    "BACKENDS", "DEMO_NAME", "HUB_ID", "LoadedModel", "ModelFacts", "ModelRef", "check_model_folder",
    "available_memory_bytes", "cuda_available", "demo_dense_dir", "demo_gguf_path",
    "ensure_demo_model", "gib", "local_folder", "open_model", "resolve",
]
