"""A qdesk checkpoint read back: its quantized Linears as codes and scales, and
its other tensors as they are.

The format is the one ``qdesk.core.quant.checkpoint`` writes (compressed-tensors
``pack-quantized``, or ``naive-quantized`` int8 codes for asymmetric groups of
mixed checkpoints and float zeros). Every header is checked before a library
reads it; a tensor that is not what the config says is one BadInput line.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qdesk.core.errors import BadInput

# Files of a checkpoint folder that are neither weights nor qdesk's own: the
# tokenizer, chat template and generation settings every export carries over.
_NOT_CARRIED = {"config.json", "qdesk.json", "model.safetensors.index.json", "qdesk_export.json"}
_VOCABULARY_FILES = ("tokenizer.model", "tokenizer.json", "vocab.json", "merges.txt",
                     "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class LayerFormat:
    """How one Linear was quantized (from the checkpoint's config groups)."""

    bits: int
    group_size: int  # -1: one group per row
    symmetric: bool
    float_zero: bool


@dataclass
class QdeskCheckpoint:
    folder: Path
    config: dict  # config.json, quantization_config included
    recipe: dict  # qdesk.json
    formats: dict[str, LayerFormat]  # quantized Linear name -> format
    files: list[Path]  # safetensors files
    _where: dict[str, Path]  # tensor name -> its file

    @property
    def quantized(self) -> list[str]:
        return list(self.formats)

    def tensor(self, name: str):
        from safetensors import safe_open

        with safe_open(str(self._where[name]), framework="pt") as f:
            return f.get_tensor(name)

    def has(self, name: str) -> bool:
        return name in self._where

    def record(self, name: str):
        """The ``QuantizedWeight`` of quantized Linear ``name`` (CPU tensors)."""
        import torch

        from qdesk.core.quant.packing import unpack_int32
        from qdesk.core.quant.primitives import QuantizedWeight

        fmt = self.formats[name]
        scale = self.tensor(f"{name}.weight_scale")
        if self.has(f"{name}.weight_packed"):
            shape = [int(v) for v in self.tensor(f"{name}.weight_shape").tolist()]
            try:
                q = unpack_int32(self.tensor(f"{name}.weight_packed"), fmt.bits, shape[1])
            except ValueError as e:
                raise BadInput(f"{self.folder}: {name}: packed codes do not fit its shape ({e})") from None
            zero = None
            if not fmt.symmetric:
                zero = unpack_int32(self.tensor(f"{name}.weight_zero_point"), fmt.bits, shape[0],
                                    packed_dim=0)
        else:
            q = self.tensor(f"{name}.weight")
            if q.dtype != torch.int8:
                raise BadInput(f"{self.folder}: {name}.weight is {q.dtype}, not int8 codes")
            zero = None if fmt.symmetric else self.tensor(f"{name}.weight_zero_point")
        out, n = q.shape
        groups = 1 if fmt.group_size == -1 else n // max(1, fmt.group_size)
        if tuple(scale.shape) != (out, groups) or (zero is not None and tuple(zero.shape) != (out, groups)):
            raise BadInput(f"{self.folder}: {name}: scales of shape {tuple(scale.shape)} do not fit "
                           f"{out} x {n} codes in groups of {fmt.group_size}")
        if zero is not None and fmt.float_zero != zero.is_floating_point():
            raise BadInput(f"{self.folder}: {name}: its zero point's dtype contradicts the config")
        return QuantizedWeight(q.contiguous(), scale, zero, fmt.bits, fmt.group_size)

    def dense_names(self) -> list[str]:
        """Tensors that are not part of a quantized Linear (embeddings, norms, head...)."""
        parts = {f"{n}.{leaf}" for n in self.formats
                 for leaf in ("weight", "weight_packed", "weight_scale", "weight_zero_point",
                              "weight_shape")}
        return [n for n in self._where if n not in parts]

    def carried_files(self) -> list[Path]:
        """Tokenizer, chat template, generation config: files every export copies.

        transformers re-saves a tokenizer as tokenizer.json only, so a checkpoint
        of a SentencePiece model lacks tokenizer.model, which llama.cpp's
        converter needs (Gemma, Phi-3); vocabulary files the checkpoint lacks are
        taken from the model it was quantized from, when that folder is there."""
        own = sorted(p for p in self.folder.iterdir()
                     if p.is_file() and p.suffix != ".safetensors" and p.name not in _NOT_CARRIED)
        origin = Path(str(self.recipe.get("source") or ""))
        if origin.is_dir() and origin.resolve() != self.folder.resolve():
            names = {p.name for p in own}
            own += sorted(origin / n for n in _VOCABULARY_FILES
                          if n not in names and (origin / n).is_file())
        return own

    def dense_config(self) -> dict:
        """config.json without its quantization: the dense model's config."""
        config = {k: v for k, v in self.config.items() if k != "quantization_config"}
        return config


def is_qdesk_checkpoint(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / "qdesk.json").is_file() and (folder / "config.json").is_file()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise BadInput(f"{path}: not a JSON object")
    return value


def _group_format(weights: dict, where: str) -> LayerFormat:
    try:
        bits = int(weights["num_bits"])
        strategy = weights.get("strategy")
        group = -1 if strategy == "channel" else int(weights["group_size"])
        symmetric = bool(weights["symmetric"])
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{where}: a config group's weights are not a qdesk format") from None
    if weights.get("type", "int") != "int" or weights.get("actorder"):
        raise BadInput(f"{where}: only integer weights in natural column order can be exported")
    return LayerFormat(bits, group, symmetric, "zp_dtype" in weights)


def open_checkpoint(folder: Path) -> QdeskCheckpoint:
    """Read a qdesk checkpoint's config, recipe and tensor index (no tensor data)."""
    from qdesk.core.models.safetensors_check import read_safetensors_header

    folder = Path(folder)
    config = _read_json(folder / "config.json")
    recipe = _read_json(folder / "qdesk.json")
    quant = config.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "compressed-tensors":
        raise BadInput(f"{folder}: config.json has no compressed-tensors quantization_config")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BadInput(f"{folder}: no .safetensors weights in this folder")
    where: dict[str, Path] = {}
    for f in files:
        for name in read_safetensors_header(f):
            where[name] = f
    modules = sorted(n[: -len(".weight_scale")] for n in where if n.endswith(".weight_scale"))
    groups = quant.get("config_groups") or {}
    formats: dict[str, LayerFormat] = {}
    for key, group in groups.items():
        if not isinstance(group, dict) or not isinstance(group.get("weights"), dict):
            raise BadInput(f"{folder}: config group {key!r} has no weights")
        fmt = _group_format(group["weights"], f"{folder / 'config.json'} group {key}")
        targets = group.get("targets") or []
        for m in modules:
            if "Linear" in targets or m in targets:
                formats.setdefault(m, fmt)
    missing = [m for m in modules if m not in formats]
    if missing:
        raise BadInput(f"{folder}: {missing[0]} has scales but no config group names it")
    return QdeskCheckpoint(folder, config, recipe, formats, files, where)


def write_dense_folder(ckpt: QdeskCheckpoint, out: Path, shard_bytes: int = 2 * 2**30) -> Iterator[str]:
    """A plain HF folder of the checkpoint's dequantized model for llama.cpp's
    converter: quantized Linears as float32 (q - z) * s, exact; other tensors as
    stored. Yields each Linear's name as it is written (the cancel point)."""
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True)
    shard: dict[str, torch.Tensor] = {}
    size = 0
    index: dict[str, str] = {}
    n_shard = 0

    def flush() -> None:
        nonlocal shard, size, n_shard
        if not shard:
            return
        n_shard += 1
        name = f"model-{n_shard:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        index.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    def add(name: str, t: torch.Tensor) -> None:
        nonlocal size
        shard[name] = t.contiguous()
        size += t.numel() * t.element_size()
        if size >= shard_bytes:
            flush()

    for name in ckpt.dense_names():
        add(name, ckpt.tensor(name))
    for name in ckpt.quantized:
        add(f"{name}.weight", ckpt.record(name).dequantize(torch.float32))
        yield name
    flush()
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": index}, indent=1), encoding="utf-8")
    config = ckpt.dense_config()
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    for f in ckpt.carried_files():
        shutil.copy2(f, out / f.name)


def folder_bytes(folder: Path) -> int:
    return sum(os.path.getsize(p) for p in Path(folder).glob("*.safetensors"))
