"""The typed, frozen events ``export_steps`` yields (plain data, no tensors)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class _Event:
    def to_json(self) -> dict:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class ExportStarted(_Event):
    format: str  # gguf | gptq | compressed-tensors | bf16
    type: str  # the GGUF type asked for ("exact", "Q4_K_M", ...), or the format again
    source: str
    target: str


@dataclass(frozen=True)
class ExportProgress(_Event):
    """One step of a stage. stage: dequantize | convert | map | imatrix |
    quantize | write | verify. ``total`` 0: not known yet. ``detail``: the
    tensor, layer or window at hand."""

    stage: str
    done: int
    total: int
    detail: str = ""


@dataclass(frozen=True)
class QuantizerStarted(_Event):
    """llama.cpp's quantizer runs in child process ``pid``."""

    pid: int
    ftype: str


@dataclass(frozen=True)
class Verification(_Event):
    """The exported file reopened in its consumer against qdesk's in-memory
    model on held-out text (llama-perplexity --kl-divergence definitions;
    the second half of each window scored). An exact export passes when its
    weights are qdesk's and it reaches same top p >= 0.99 and mean KLD < 0.001;
    ``passed`` is None for lossy types (the figures are the loss itself)."""

    consumer: str  # llama.cpp | transformers | qdesk's GPTQ dequantizer
    text: str
    ctx: int
    windows: int
    tokens: int
    mean_kld: float
    same_top_p: float
    ppl_ratio: float
    seconds: float
    exact_expected: bool
    passed: bool | None  # None: no threshold applies (a lossy type)
    # exact exports: the file's weights decoded (gguf-py / safetensors) equal
    # qdesk's bit for bit, but for ``rounded_scales`` float16-rounded scales
    weights_exact: bool | None = None
    rounded_scales: int = 0
    note: str = ""


@dataclass(frozen=True)
class ExportDone(_Event):
    path: str
    format: str
    type: str
    bytes: int
    bits_per_weight: float  # 8 x weight bytes / weights, every tensor counted
    seconds: float
    tensor_types: dict  # GGUF type -> tensors of that type (GGUF), {} otherwise
    imatrix: str | None = None  # the importance matrix file written or used
    verification: Verification | None = None
    notes: tuple[str, ...] = ()
