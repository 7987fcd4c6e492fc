"""Safetensors exports: dense BF16 (sharded, with an index), GPTQ from a qdesk
checkpoint's codes, and the compressed-tensors checkpoint itself (copied).

Every export is a complete Hugging Face folder: config.json, the tokenizer,
chat template and generation config carried over, and ``qdesk_export.json``
(what it is, from what; the mark ``--force`` looks for)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.export.events import ExportProgress
from qdesk.core.export.gptq_format import gptq_refusal, gptq_tensors, quantization_config
from qdesk.core.export.sources import ExportSource

_NOT_CARRIED = {"config.json", "qdesk.json", "model.safetensors.index.json", "qdesk_export.json"}


def carried_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix != ".safetensors" and p.name not in _NOT_CARRIED)


def _source_tensors(source: ExportSource) -> Iterator[tuple[str, object]]:
    """(name, torch tensor) of the source as stored; a checkpoint's quantized
    Linears dequantized in float32."""
    import torch

    ckpt = source.checkpoint
    if ckpt is not None:
        for name in ckpt.dense_names():
            yield name, ckpt.tensor(name)
        for name in ckpt.quantized:
            yield f"{name}.weight", ckpt.record(name).dequantize(torch.float32)
        return
    from safetensors import safe_open

    for f in sorted(source.folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                yield name, fh.get_tensor(name)


class ShardWriter:
    """Tensors into ``model-0000i-of-0000n.safetensors`` files of at most
    ``shard_bytes`` and ``model.safetensors.index.json`` (transformers' layout)."""

    def __init__(self, folder: Path, shard_bytes: int) -> None:
        self.folder, self.shard_bytes = Path(folder), shard_bytes
        self.pending: dict = {}
        self.size = 0
        self.written: list[tuple[str, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.size + nbytes > self.shard_bytes:
            self._flush()
        self.pending[name] = tensor.contiguous()
        self.size += nbytes
        self.total += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        name = f"part-{len(self.written) + 1:05d}.safetensors"
        save_file(self.pending, str(self.folder / name), metadata={"format": "pt"})
        self.written.append((name, list(self.pending)))
        self.pending, self.size = {}, 0

    def close(self) -> list[str]:
        self._flush()
        n = len(self.written)
        if n == 1:
            (self.folder / self.written[0][0]).rename(self.folder / "model.safetensors")
            return ["model.safetensors"]
        weight_map, files = {}, []
        for i, (tmp, names) in enumerate(self.written, 1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            (self.folder / tmp).rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
            files.append(final)
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2), encoding="utf-8")
        return files


def _write_config(source: ExportSource, out: Path, dtype: str, quant: dict | None) -> None:
    config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    config.pop("quantization_config", None)
    config["torch_dtype" if "torch_dtype" in config else "dtype"] = dtype
    if quant is not None:
        config["quantization_config"] = quant
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    files = source.checkpoint.carried_files() if source.checkpoint else carried_files(source.folder)
    for f in files:
        shutil.copy2(f, out / f.name)


def bf16_steps(source: ExportSource, out: Path, shard_bytes: int) -> Iterator[ExportProgress]:
    """Dense bfloat16 weights (floating tensors cast, others as they are)."""
    import torch

    out.mkdir()
    writer = ShardWriter(out, shard_bytes)
    names = 0
    for name, t in _source_tensors(source):
        writer.add(name, t.to(torch.bfloat16) if t.is_floating_point() else t)
        names += 1
        yield ExportProgress("write", names, 0, name)
    files = writer.close()
    _write_config(source, out, "bfloat16", None)
    return {"files": files, "tensors": names}


def check_gptq(source: ExportSource) -> tuple[int, int]:
    """(bits, group size) of a checkpoint GPTQ can hold; BadInput saying why not."""
    ckpt = source.checkpoint
    if ckpt is None:
        raise BadInput(f"{source.name} has dense weights: GPTQ format holds a qdesk checkpoint's "
                       "codes (quantize it first with qdesk quantize --method gptq)")
    formats = set(ckpt.formats.values())
    for name, fmt in ckpt.formats.items():
        why = gptq_refusal(fmt.bits, fmt.group_size, fmt.symmetric, fmt.float_zero)
        if why:
            raise BadInput(f"no GPTQ export of {source.name}: {name}: {why}")
    if len(formats) > 1:
        raise BadInput(f"no GPTQ export of {source.name}: its layers mix "
                       f"{len(formats)} formats and GPTQ's quantize_config holds one; "
                       "--format compressed-tensors holds mixed plans")
    kept = ckpt.recipe.get("kept") or []
    decoder_kept = [n for n in kept if "lm_head" not in n]
    if decoder_kept:
        raise BadInput(f"no GPTQ export of {source.name}: its plan kept {decoder_kept[0]} "
                       "unquantized and GPTQ quantizes every decoder Linear alike; "
                       "--format compressed-tensors holds it")
    fmt = formats.pop()
    return fmt.bits, fmt.group_size


def gptq_steps(source: ExportSource, out: Path, shard_bytes: int) -> Iterator[ExportProgress]:
    import torch

    bits, group = check_gptq(source)
    ckpt = source.checkpoint
    out.mkdir()
    writer = ShardWriter(out, shard_bytes)
    for name in ckpt.dense_names():
        writer.add(name, ckpt.tensor(name))
    inexact = 0
    for i, name in enumerate(ckpt.quantized, 1):
        qw = ckpt.record(name)
        tensors, off = gptq_tensors(qw.q.numpy(), qw.scale.float().numpy(), bits, group)
        inexact += off
        for leaf, array in tensors.items():
            writer.add(f"{name}.{leaf}", torch.from_numpy(array))
        yield ExportProgress("write", i, len(ckpt.quantized), name)
    files = writer.close()
    quant = quantization_config(bits, group)
    dtype = ckpt.config.get("torch_dtype") or ckpt.config.get("dtype") or "float16"
    _write_config(source, out, str(dtype), quant)
    (out / "quantize_config.json").write_text(json.dumps(quant, indent=2), encoding="utf-8")
    return {"files": files, "bits": bits, "group_size": group, "inexact_scales": inexact}


def compressed_tensors_steps(source: ExportSource, out: Path) -> Iterator[ExportProgress]:
    """The checkpoint as it is (qdesk writes compressed-tensors), copied file by file."""
    if source.checkpoint is None:
        raise BadInput(f"{source.name} has dense weights: a compressed-tensors export is a "
                       "qdesk checkpoint (quantize it first with qdesk quantize)")
    out.mkdir()
    files = sorted(p for p in source.folder.iterdir() if p.is_file() and p.name != "qdesk_export.json")
    have = {f.name for f in files}
    files += [f for f in source.checkpoint.carried_files() if f.name not in have]
    for i, f in enumerate(files, 1):
        shutil.copy2(f, out / f.name)
        yield ExportProgress("write", i, len(files), f.name)
    return {"files": [f.name for f in files]}


def dequantized_gptq_folder(export: Path, out: Path) -> Path:
    """A dense float32 folder of a GPTQ export decoded by qdesk's reference
    dequantizer (for verification where transformers' GPTQ loader is missing)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from qdesk.core.export.gptq_format import gptq_dequantize

    config = json.loads((export / "config.json").read_text(encoding="utf-8"))
    bits = int(config["quantization_config"]["bits"])
    state = {}
    for f in sorted(export.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                state[name] = fh.get_tensor(name)
    dense = {}
    for name in list(state):
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            w = gptq_dequantize(state[name].numpy(), state[f"{base}.qzeros"].numpy(),
                                state[f"{base}.scales"].numpy(), state[f"{base}.g_idx"].numpy(), bits)
            dense[f"{base}.weight"] = torch.from_numpy(w)
        elif not name.endswith((".qzeros", ".scales", ".g_idx")):
            dense[name] = state[name]
    out.mkdir()
    save_file(dense, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.pop("quantization_config")
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for f in carried_files(export):
        if f.name != "quantize_config.json":
            shutil.copy2(f, out / f.name)
    return out
