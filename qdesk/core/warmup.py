"""Import the heavy libraries up front, on the calling thread.

Why: importing torch and transformers runs C extension initialisation and
module code that hold the GIL for hundreds of milliseconds at a time (measured
in the GUI: a 280 ms freeze of the window while a worker thread imported
transformers' model loading code). The app imports them before its window
opens, where a wait is expected, instead of inside the first job.

``from transformers import AutoModelForCausalLM`` alone is not enough:
transformers' top level is lazy, and the first ``from_config`` or
``from_pretrained`` imported about 1,200 more modules (its modeling and
generation code, accelerate, sympy and torch.distributed through them) inside
the loading worker, freezing the window for up to 350 ms at a time (measured
with ``benchmarks/bench_ui.py --diagnose``). So the modules a load, a chat and a
quantization really run are named here one by one.
"""

from __future__ import annotations

import importlib

MODULES = (
    "torch",
    "safetensors.torch",
    "transformers.modeling_utils",
    "transformers.generation.utils",
    "transformers.cache_utils",
    "transformers.masking_utils",
    "transformers.tokenization_utils_tokenizers",
    # The demo's architecture (every first start opens it) and the commonest others'.
    "transformers.models.llama.modeling_llama",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "platformdirs",
    "qdesk.core.models.opening",
    "qdesk.core.models.weight_index",
    "qdesk.core.models.safetensors_check",
    "qdesk.core.models.dense_folder",
    "qdesk.core.chat.hf_backend",
    "qdesk.core.packed.loading",
    "qdesk.core.quant.steps",
    "qdesk.core.quant.gptq",
    "qdesk.core.quant.awq",
    "qdesk.core.quant.hqq",
    "qdesk.core.quant.selfcheck",
    "qdesk.core.quant.calibration",
    "qdesk.core.quant.checkpoint",
)


def import_model_libraries() -> None:
    """torch, transformers and what opening, chatting and quantizing a model import."""
    for name in MODULES:
        importlib.import_module(name)
