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

import json
import logging
import os
from pathlib import Path

import torch

from qdesk.core.atomic import (
    check_manifest,
    clean_stale_partials,
    file_manifest,
    partial_name,
    publish,
    remove,
    replace_verified,
)
from qdesk.core.errors import BadInput, OutOfResources, is_disk_full
from qdesk.core.quant.packing import pack_int32
from qdesk.core.quant.primitives import QuantizedWeight

log = logging.getLogger(__name__)

FORMAT = "pack-quantized"
RECIPE_FILE = "qdesk.json"


def check_output_dir(path: Path, force: bool) -> None:
    """Refuse an existing folder unless ``force``; even then replace only an empty
    folder or a qdesk checkpoint whose manifest (``qdesk.json`` ``files``) lists
    exactly the files there, never other files of the user's. Also refuses an
    output qdesk cannot name or write, before any work."""
    path = Path(path)
    _check_writable_name(path)
    if not path.exists() and not path.is_symlink():
        if not path.parent.is_dir():
            what = "not a folder" if path.parent.exists() else "no such folder"
            raise BadInput(f"{path.parent}: {what}")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise BadInput(f"{path.parent}: not writable (permission denied)")
        return
    if not force:
        raise BadInput(f"{path} exists (pass --force to replace a qdesk checkpoint there)")
    check_manifest(path, RECIPE_FILE, "checkpoint")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BadInput(f"{path.parent}: not writable (permission denied)")


def _check_writable_name(path: Path) -> None:
    """A name the file system and qdesk.json can hold (a name from bytes that are
    not UTF-8 reaches Python as lone surrogates, and json/safetensors fail on it
    only after the whole job)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{os.fsencode(path)!r}: the output name is not valid UTF-8") from None
    if len(os.fsencode(path.name)) > 200:  # room for the partial name's prefix and suffix
        raise BadInput(f"{path.name[:40]}…: the output name is too long")


def verify_checkpoint(path: Path) -> None:
    """BadInput unless ``path`` is a qdesk checkpoint (or empty) qdesk may replace."""
    check_manifest(path, RECIPE_FILE, "checkpoint")


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
    clean_stale_partials(out_dir.parent)
    tmp = partial_name(out_dir)
    remove(tmp)
    linear_names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        tmp.mkdir()
        state = compressed_state_dict(model, records)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del state
        config = model.config.to_dict()
        config["quantization_config"] = quantization_config(records, linear_names)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        # The manifest makes this folder verifiably qdesk's: --force replaces it
        # only while it holds exactly these files.
        recipe = {**recipe, "files": file_manifest(tmp, RECIPE_FILE)}
        (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=2), encoding="utf-8")
        if force:
            replace_verified(tmp, out_dir, verify_checkpoint)
        else:
            publish(tmp, out_dir)
    except FileExistsError:
        raise BadInput(f"{out_dir} appeared while the checkpoint was being saved (another "
                       "program or qdesk run?); it was left as it is and nothing was written") from None
    except Exception as e:
        if is_disk_full(e):
            need = sum(v.numel() * v.element_size() for v in compressed_state_dict(model, records).values())
            raise OutOfResources(
                f"disk full writing {out_dir}: the checkpoint needs about {need / 2**20:.1f} MiB "
                f"of weights plus its tokenizer (a few MiB) free in {out_dir.parent}"
            ) from None
        if isinstance(e, OSError):
            raise BadInput(f"cannot write {out_dir}: {e.strerror or e}") from None
        raise
    finally:
        remove(tmp)
    log.info("wrote %s", out_dir)
    return out_dir
