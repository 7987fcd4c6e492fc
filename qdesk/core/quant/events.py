"""The typed, frozen events ``quantize_steps`` yields (plain data, no tensors)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class _Event:
    def to_json(self) -> dict:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class CalibrationProgress(_Event):
    """stage: "capture" (embedding the calibration samples) or "sensitivity"."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class LayerQuantized(_Event):
    """One Linear done. rel_error = ||X(Wq - W)^T|| / ||X W^T|| on calibration inputs."""

    index: int  # 1-based over the Linears to quantize
    total: int
    name: str
    method: str
    bits: int
    group_size: int
    symmetric: bool
    rel_error: float
    seconds: float


@dataclass(frozen=True)
class TuningProgress(_Event):
    """A tuning method (SignRound) is ``iteration`` of ``iterations`` into decoder
    block ``block`` of ``blocks`` (1-based); loss: the mini-batch's mean square
    output error against the dense block."""

    block: int
    blocks: int
    iteration: int
    iterations: int
    loss: float


@dataclass(frozen=True)
class BlockTuned(_Event):
    """One decoder block tuned: its output error at the first iteration and the
    lowest one (whose parameters were kept), and the seconds it took."""

    block: int
    blocks: int
    iterations: int
    loss_start: float
    loss_best: float
    seconds: float


@dataclass(frozen=True)
class LayerSensitivity(_Event):
    """The sensitivity search's measurement of one Linear: its relative output
    error when rounded (RTN, no clipping) at each width the search may give it."""

    name: str
    errors: tuple[tuple[int, float], ...]  # (bits, rel_error), bits increasing


@dataclass(frozen=True)
class LayerKept(_Event):
    name: str
    reason: str


@dataclass(frozen=True)
class SavingCheckpoint(_Event):
    path: str


@dataclass(frozen=True)
class SelfCheck(_Event):
    """The quantized model against the original on held-out text (never the
    calibration text), after the last layer: the end-to-end check the per-layer
    errors cannot give (they do not see a wrong fold or a broken layer walk).

    mean_kld: llama.cpp's mean KL(original || quantized) in nats over the scored
    positions (second half of each window); same_top_p: the fraction of them
    where both models' top-1 agree; rtn_mean_kld: plain RTN of the same format
    on the same windows (None when not measured: the method is RTN).
    plausible is False, with ``warning`` saying why, when the result is worse
    than that RTN or beyond what a working quantization of any width measured."""

    text: str
    windows: int
    tokens: int
    mean_kld: float
    same_top_p: float
    rtn_mean_kld: float | None
    seconds: float
    plausible: bool
    warning: str | None = None
    rtn_same_top_p: float | None = None
    kld_limit: float = 0.0  # the mean KLD above which a result counts as broken


@dataclass(frozen=True)
class QuantizeSummary(_Event):
    method: str
    plan: str
    layers_quantized: int
    layers_kept: int
    bits_per_weight: float  # over the decoder Linears, scales and zeros included
    mean_rel_error: float
    seconds: float
    calibration: str
    calibration_hash: str
    output_dir: str | None
    peak_memory_bytes: int
    check: SelfCheck | None = None  # None: not run (no tokenizer, or switched off)
    # What the source's weights were quantized as before (e.g. "GGUF Q4_1"): the
    # result then starts from quantized weights, not the original ones.
    source_quantization: str | None = None
