"""What an export starts from: a loaded model, the folder it came from, and
whether its weights are already quantized."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdesk.core.errors import BadInput
from qdesk.core.export.checkpoint_source import (
    QdeskCheckpoint,
    is_qdesk_checkpoint,
    open_checkpoint,
)


@dataclass
class ExportSource:
    """kind: "dense" (an HF folder of float weights; the demo's dense copy is
    the project's reference and counts as dense), "qdesk" (a qdesk checkpoint),
    "gguf" (the dense copy of a quantized GGUF file)."""

    name: str
    folder: Path
    kind: str
    loaded: object  # the LoadedModel on the transformers backend
    checkpoint: QdeskCheckpoint | None = None

    @property
    def quantized(self) -> bool:
        return self.kind in ("qdesk", "gguf")

    @property
    def architecture(self) -> str:
        return self.loaded.facts.architecture

    def describe(self) -> str:
        return {"dense": "dense weights", "qdesk": "a qdesk checkpoint",
                "gguf": "a quantized GGUF (dequantized)"}[self.kind]


def source_from_loaded(loaded) -> ExportSource:
    """The export source of a model loaded on the transformers backend."""
    facts = loaded.facts
    if facts.backend != "hf" or loaded.model is None:
        raise BadInput(f"{facts.name}: exports start from the transformers backend "
                       "(open it with --backend hf)")
    folder = Path(facts.path)
    if is_qdesk_checkpoint(folder):
        return ExportSource(facts.name, folder, "qdesk", loaded, open_checkpoint(folder))
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"{folder / 'config.json'}: not readable ({e})") from None
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "quantized") if isinstance(quant, dict) else "quantized"
        raise BadInput(f"{facts.name} holds {method} weights from another tool: qdesk exports "
                       "dense models and its own checkpoints")
    kind = "gguf" if facts.source == "gguf" else "dense"
    return ExportSource(facts.name, folder, kind, loaded)


def folder_outtype(folder: Path) -> str:
    """The converter outtype that holds a dense folder's weights exactly: bf16
    or f16 when every 2-D float tensor is of that dtype, otherwise f32."""
    from qdesk.core.models.safetensors_check import read_safetensors_header

    dtypes = set()
    for f in sorted(Path(folder).glob("*.safetensors")):
        for rec in read_safetensors_header(f).values():
            if len(rec["shape"]) >= 2 and rec["dtype"] in ("F32", "F16", "BF16", "F64"):
                dtypes.add(rec["dtype"])
    if dtypes == {"BF16"}:
        return "bf16"
    if dtypes == {"F16"}:
        return "f16"
    return "f32"


def linear_weights(source: ExportSource) -> Iterator[tuple[str, np.ndarray]]:
    """(Linear module name, its weight as stored, float32 (out, in)) for every
    Linear of the model, read from the source's files (for a checkpoint: the
    dequantized codes), the values llama.cpp's converter sees."""
    import torch

    model = source.loaded.model
    if source.checkpoint is not None:
        ckpt = source.checkpoint
        for name in ckpt.quantized:
            yield name, ckpt.record(name).dequantize(torch.float32).numpy()
        done = set(ckpt.quantized)
        reader = ckpt.tensor
        has = ckpt.has
    else:
        from safetensors import safe_open

        from qdesk.core.models.safetensors_check import read_safetensors_header

        where = {}
        for f in sorted(source.folder.glob("*.safetensors")):
            for name in read_safetensors_header(f):
                where[name] = f

        def reader(name: str):
            with safe_open(str(where[name]), framework="pt") as fh:
                return fh.get_tensor(name)

        done = set()

        def has(name: str) -> bool:
            return name in where

    names = {id(m): n for n, m in model.named_modules()}
    emb = model.get_input_embeddings()
    emb_key = f"{names.get(id(emb), '')}.weight"
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name in done:
            continue
        key = f"{name}.weight"
        if not has(key) and emb is not None and module.weight is emb.weight and has(emb_key):
            key = emb_key  # a tied head is stored once, as the embedding
        if has(key):
            yield name, reader(key).float().numpy()
