"""Import the heavy libraries up front, on the calling thread.

Why: importing torch and transformers runs C extension initialisation and
module code that hold the GIL for hundreds of milliseconds at a time (measured
in the GUI: a 280 ms freeze of the window while a worker thread imported
transformers' model loading code). The app imports them before its window
opens, where a wait is expected, instead of inside the first job.
"""

from __future__ import annotations


def import_model_libraries() -> None:
    """torch, transformers and what opening and quantizing a model import."""
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import qdesk.core.quant.steps  # noqa: F401
