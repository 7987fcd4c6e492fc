"""compressed-tensors ``pack-quantized`` checkpoints.

Per quantized Linear ``N`` the safetensors file holds ``N.weight_packed`` (int32,
codes packed along the input axis, see ``packing``), ``N.weight_scale`` (16-bit,
(out, n_groups)), ``N.weight_zero_point`` (asymmetric only: int32, packed along
the output axis) and ``N.weight_shape`` (int64 [out, in]). ``config.json``
carries ``quantization_config`` with one config group per distinct scheme;
kept Linears and the output head are listed in ``ignore``. ``qdesk.json`` holds
the recipe. The folder is written under a temporary name and renamed at the end.

Where the loaders fall short (transformers 5.23 + compressed-tensors 0.20), the
writer adapts so that ``AutoModelForCausalLM.from_pretrained(dir)`` always works:
a uniform asymmetric checkpoint asks transformers to dequantize while loading;
the asymmetric groups of a mixed checkpoint, and float zero points (HQQ's), are
``naive-quantized`` (int8 codes, unpacked). See ``_naive``.

Tensors left unquantized (embedding, norms, output head) are stored in the
narrowest float dtype that holds their values exactly (bfloat16 for a bfloat16
model computed in float32), so the file is not twice the original's size;
``config.json`` keeps the in-memory dtype, so a plain ``from_pretrained`` widens
them back and computes what qdesk computed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from qdesk.core.errors import BadInput, OutOfResources
from qdesk.core.quant.packing import pack_int32
from qdesk.core.quant.primitives import QuantizedWeight

log = logging.getLogger(__name__)

FORMAT = "pack-quantized"


def check_output_dir(path: Path, force: bool) -> None:
    """Refuse an existing folder unless ``force``; even then replace only an empty
    folder or an earlier qdesk checkpoint, never other files of the user's."""
    path = Path(path)
    if not path.exists():
        if not path.parent.exists():
            raise BadInput(f"{path.parent}: no such folder")
        return
    if not force:
        raise BadInput(f"{path} exists (pass --force to replace a qdesk checkpoint there)")
    if not path.is_dir() or (any(path.iterdir()) and not (path / "qdesk.json").is_file()):
        raise BadInput(f"{path} exists and is not a qdesk checkpoint: qdesk will not replace it")


def weights_config(qw: QuantizedWeight) -> dict:
    config = {
        "num_bits": qw.bits,
        "type": "int",
        "symmetric": qw.symmetric,
        "strategy": "channel" if qw.group_size == -1 else "group",
        "group_size": None if qw.group_size == -1 else qw.group_size,
        "dynamic": False,
        "actorder": None,
        "observer": None,
        "block_structure": None,
    }
    if qw.float_zero:
        config["zp_dtype"] = str(qw.zero.dtype)  # e.g. "torch.bfloat16"
    return config


def _schemes(records: dict[str, QuantizedWeight]) -> list[tuple[dict, list[str]]]:
    schemes: dict[str, list[str]] = {}
    for name, qw in records.items():
        schemes.setdefault(json.dumps(weights_config(qw), sort_keys=True), []).append(name)
    return [(json.loads(k), names) for k, names in schemes.items()]


def _naive(weights: dict, uniform: bool) -> bool:
    """Asymmetric groups of a mixed checkpoint, and float zero points, are stored
    unpacked (int8 codes).

    Why: transformers 5 + compressed-tensors 0.20 load packed zero points only on
    their dequantize-while-loading route, and that route applies one scheme to
    every module; the other route handles mixed schemes but expects zero points
    unpacked. A float zero cannot be packed at all: ``pack-quantized`` unpacks
    every asymmetric zero point from int32 on both routes ("ValueError: Expected
    torch.int32 but got torch.float32, Aborting unpack."), while
    ``naive-quantized`` loads a ``zp_dtype`` float zero and computes
    (q - zero) * scale. Other integer checkpoints are pack-quantized."""
    if weights["symmetric"]:
        return False
    return not uniform or "zp_dtype" in weights


def quantization_config(records: dict[str, QuantizedWeight], linear_names: list[str]) -> dict:
    schemes = _schemes(records)
    uniform = len(schemes) == 1
    ignore = [n for n in linear_names if n not in records]
    groups = {}
    formats = set()
    for i, (weights, names) in enumerate(schemes):
        fmt = "naive-quantized" if _naive(weights, uniform) else FORMAT
        formats.add(fmt)
        groups[f"group_{i}"] = {
            "targets": ["Linear"] if uniform else names,
            "weights": weights,
            "input_activations": None,
            "output_activations": None,
            "format": fmt,
        }
    config = {
        "quant_method": "compressed-tensors",
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": ignore,
        "kv_cache_scheme": None,
        "sparsity_config": {},
        "global_compression_ratio": None,
    }
    if uniform and not schemes[0][0]["symmetric"]:
        # Asymmetric packed zero points load only when transformers dequantizes
        # while loading (see _naive).
        config["dequantize"] = True
    return config


def compressed_state_dict(model, records: dict[str, QuantizedWeight]) -> dict[str, torch.Tensor]:
    """Scales are stored in the model's dtype: a float32 model's file holds its
    bfloat16 scales exactly, widened, so every loader computes the same product
    (a bfloat16 scale would make compressed-tensors round (q - zero) * scale to
    bfloat16). Integer zeros are packed; float zeros keep their 16-bit dtype."""
    state = {}
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    uniform = len(_schemes(records)) == 1
    for key, value in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue
        module, _, leaf = key.rpartition(".")
        if module in records and leaf == "weight":
            qw = records[module]
            state[f"{module}.weight_scale"] = qw.scale.cpu().to(value.dtype)
            if _naive(weights_config(qw), uniform):
                state[f"{module}.weight"] = qw.q.cpu()
                state[f"{module}.weight_zero_point"] = qw.zero.cpu()
                continue
            state[f"{module}.weight_packed"] = pack_int32(qw.q.cpu(), qw.bits)
            if qw.zero is not None:
                state[f"{module}.weight_zero_point"] = pack_int32(qw.zero.cpu(), qw.bits, 0)
            state[f"{module}.weight_shape"] = torch.tensor(list(qw.q.shape), dtype=torch.int64)
        else:
            state[key] = compact(value.detach().cpu())
    return {k: v.contiguous() for k, v in state.items()}


def compact(value: torch.Tensor) -> torch.Tensor:
    """A float32 tensor in the first 16-bit dtype that holds every value exactly
    (a bfloat16 model computed in float32 has bfloat16 values), else unchanged:
    half the bytes, nothing lost."""
    if value.dtype != torch.float32:
        return value
    for dtype in (torch.bfloat16, torch.float16):
        narrow = value.to(dtype)
        if torch.equal(narrow.to(torch.float32), value):
            return narrow
    return value


def write_checkpoint(
    model,
    tokenizer,
    records: dict[str, QuantizedWeight],
    out_dir: Path,
    recipe: dict,
    force: bool = False,
) -> Path:
    """Write the folder atomically: a temporary sibling, renamed at the end."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    tmp = out_dir.parent / f".{out_dir.name}.qdesk-partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    linear_names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        tmp.mkdir()
        state = compressed_state_dict(model, records)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config["quantization_config"] = quantization_config(records, linear_names)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        (tmp / "qdesk.json").write_text(json.dumps(recipe, indent=2), encoding="utf-8")
        if out_dir.exists():  # checked above: empty or an earlier qdesk checkpoint
            old = out_dir.parent / f".{out_dir.name}.qdesk-old-{os.getpid()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            need = sum(v.numel() * v.element_size() for v in compressed_state_dict(model, records).values())
            raise OutOfResources(
                f"disk full writing {out_dir}: the checkpoint needs about {need / 2**20:.0f} MiB"
            ) from None
        raise BadInput(f"cannot write {out_dir}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s", out_dir)
    return out_dir
