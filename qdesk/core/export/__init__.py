"""Export: GGUF (dense by llama.cpp's converter, llama.cpp's quantized types with
qdesk's importance matrix, exact from a qdesk checkpoint's codes) and
safetensors (GPTQ, compressed-tensors, dense BF16), each reopened in its
consumer and checked against the in-memory model.

Entry point: ``export_steps(loaded_model, ExportConfig(...))``, a generator of
typed frozen events (``events``); ``run_export`` drives it to the end.
Importing the package loads no torch, transformers or llama.cpp.
"""

from qdesk.core.export.config import (
    CONVERTER_TYPES,
    DENSE_TYPES,
    FORMATS,
    GGUF_TYPES,
    LLAMA_TYPES,
    ExportConfig,
)
from qdesk.core.export.events import (
    ExportDone,
    ExportProgress,
    ExportStarted,
    QuantizerStarted,
    Verification,
)
from qdesk.core.export.steps import check_outputs, default_imatrix_path, export_steps, run_export
from qdesk.core.export.target import previous_export_kind

__all__ = [
    "CONVERTER_TYPES", "DENSE_TYPES", "FORMATS", "GGUF_TYPES", "LLAMA_TYPES", "ExportConfig",
    "ExportDone", "ExportProgress", "ExportStarted", "QuantizerStarted", "Verification",
    "check_outputs", "default_imatrix_path", "previous_export_kind", "export_steps", "run_export",
]
