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
class LayerKept(_Event):
    name: str
    reason: str


@dataclass(frozen=True)
class SavingCheckpoint(_Event):
    path: str


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
