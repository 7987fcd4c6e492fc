"""The export job: a generator of events, the same under the CLI and the GUI.

1. Check everything cheap first: the target (free, or ``force`` and a previous
   qdesk export of the same kind), the format against the source (an
   architecture llama.cpp cannot run, a lossy re-quantization of quantized
   weights, a checkpoint GPTQ cannot hold, no exact type), the free disk.
2. Write under a temporary name beside the target, in a scratch folder beside
   it (same file system, so the final rename is atomic).
3. Verify: reopen the written file in its consumer (llama.cpp for GGUF,
   transformers for safetensors) and score held-out text against the
   in-memory model; for exact exports also decode the file's weights.
4. Rename into place; yield ``ExportDone``.

Every yield is a cancel point; closing the generator (cancel) or any error
removes the temporary file and the scratch folder: nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from qdesk.core.atomic import clean_stale_partials
from qdesk.core.errors import BadInput, OutOfResources, is_disk_full
from qdesk.core.export.config import CONVERTER_TYPES, FLOAT_TYPES, ExportConfig
from qdesk.core.export.events import ExportDone, ExportProgress, ExportStarted, Verification
from qdesk.core.export.sources import ExportSource, folder_outtype, source_from_loaded
from qdesk.core.export.target import GGUF_MARKER, check_target, commit, remove, write_folder_marker

GIB = 2**30


def default_imatrix_path(output: Path) -> Path:
    """``model-Q4_K_M.gguf`` -> ``model-Q4_K_M.imatrix.gguf`` beside it."""
    stem = output.name[: -len(".gguf")] if output.name.endswith(".gguf") else output.name
    return output.with_name(f"{stem}.imatrix.gguf")


def _partial(path: Path, tag: str) -> Path:
    """A hidden sibling that keeps the suffix (llama.cpp and qdesk open by suffix)."""
    suffix = path.suffix if path.suffix == ".gguf" else ""
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.qdesk-{tag}-{os.getpid()}{suffix}")


def _check_source(source: ExportSource, config: ExportConfig) -> None:
    """The refusals that need no work: say why, and what works instead."""
    t = config.type
    if config.format == "gguf":
        from qdesk.core.models.hf_to_gguf import converter_architectures

        arch = _architecture(source)
        if arch not in converter_architectures():
            raise BadInput(f"llama.cpp cannot run {arch}: its converter has no model class for "
                           f"it; export --format bf16 (transformers, vLLM) instead")
        if t == "exact" and source.checkpoint is None:
            raise BadInput(f"--type exact writes a qdesk checkpoint's own codes; {source.name} "
                           "has dense weights (choose F16, BF16, Q8_0 or a llama.cpp type such "
                           "as Q4_K_M, or quantize it first with qdesk quantize)")
        lossy = t != "exact" and t not in FLOAT_TYPES
        if source.quantized and lossy and not config.allow_requantize:
            instead = ("--type exact keeps its own weights" if source.kind == "qdesk"
                       else "the original GGUF file is the better copy")
            raise BadInput(f"{source.name} is already quantized ({source.describe()}): "
                           f"re-quantizing it to {t} adds a second rounding; pass "
                           f"--allow-requantize to do it anyway ({instead})")
    elif config.format == "gptq":
        from qdesk.core.export.safetensors_export import check_gptq

        check_gptq(source)
    elif config.format == "compressed-tensors" and source.checkpoint is None:
        raise BadInput(f"{source.name} has dense weights: a compressed-tensors export is a "
                       "qdesk checkpoint (quantize it first with qdesk quantize)")


def _architecture(source: ExportSource) -> str:
    import json

    config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or [source.architecture]
    return str(archs[0])


def _need_bytes(source: ExportSource, config: ExportConfig) -> int:
    """Scratch files and output of an export, estimated from the parameter count."""
    params = max(1, int(source.loaded.facts.parameters or 0))
    if config.format == "gguf":
        f32 = config.type == "exact" or source.checkpoint is not None
        # dequantized folder + its F32 GGUF (exact), or a 16-bit intermediate, plus the output
        need = params * (8 if f32 else 2) + params * (4 if config.type == "F32" else 2)
    elif config.format == "bf16":
        need = params * 2
    else:
        need = sum(p.stat().st_size for p in source.folder.glob("*.safetensors"))
    # the tokenizer and configs carried over (a few MiB; 33 MiB for Gemma 3's)
    return need + sum(p.stat().st_size for p in source.folder.iterdir()
                      if p.is_file() and p.suffix != ".safetensors")


def _space_needed(source: ExportSource, config: ExportConfig) -> str:
    return f"about {_size_text(_need_bytes(source, config))}"


def _size_text(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def _check_disk(source: ExportSource, config: ExportConfig, where: Path) -> None:
    """Refuse early when the scratch files and the output cannot fit."""
    need = _need_bytes(source, config)
    free = shutil.disk_usage(where).free
    if need > free:
        raise OutOfResources(f"exporting {source.name} needs about {_size_text(need)} free in "
                             f"{where} (scratch files and the output); {_size_text(free)} is")


def _metadata(source: ExportSource, config: ExportConfig) -> dict:
    from qdesk import __version__

    meta: dict = {
        GGUF_MARKER: "gguf",
        "qdesk.export.type": config.type,
        "qdesk.export.source": str(source.folder)[-127:],
        "qdesk.version": __version__,
    }
    if config.type == "exact" or config.is_llama_type:
        meta["general.quantized_by"] = "qdesk"
    ckpt = source.checkpoint
    if ckpt is not None:
        recipe, cfg = ckpt.recipe, ckpt.recipe.get("config") or {}
        cal = recipe.get("calibration") or {}
        for key, value in (("method", cfg.get("method")), ("bits", cfg.get("bits")),
                           ("group_size", cfg.get("group_size")),
                           ("symmetric", cfg.get("symmetric")),
                           ("plan", (recipe.get("plan") or {}).get("name")),
                           ("calibration", cal.get("name")),
                           ("calibration_sha256", cal.get("sha256")),
                           ("bits_per_weight", recipe.get("bits_per_weight"))):
            if value is None:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                value = str(value)  # e.g. group size -1 (kv overrides store ints unsigned)
            meta[f"qdesk.quantization.{key}"] = value if not isinstance(value, str) else value[:127]
    return meta


def _gguf_facts(path: Path) -> tuple[dict, float]:
    from collections import Counter

    from qdesk.core.export.gguf_io import open_reader

    reader = open_reader(path)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    bits = sum(int(t.n_bytes) for t in reader.tensors) * 8
    n = sum(int(t.n_elements) for t in reader.tensors)
    return dict(types), bits / max(1, n)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def check_outputs(config: ExportConfig) -> Path | None:
    """Refuse an output (and an importance-matrix file) that exists, unless
    ``force`` and it is a previous qdesk export of that kind. Cheap: the CLI
    calls it before loading the model. Returns the imatrix path to write."""
    check_target(config.output, config.format, config.force, config.format != "gguf")
    if config.imatrix_calib is not None:  # the input files too, before any model loads
        if config.imatrix_calib.lower().endswith(".gguf"):
            if not Path(config.imatrix_calib).expanduser().is_file():
                raise BadInput(f"--imatrix-calib {config.imatrix_calib}: no such file")
        else:
            from qdesk.core.quant.calibration import check_calibration

            check_calibration(config.imatrix_calib, config.calib_samples, config.calib_tokens)
    if config.is_llama_type and config.imatrix_calib is not None and not \
            config.imatrix_calib.lower().endswith(".gguf"):
        path = config.imatrix_out or default_imatrix_path(config.output)
        check_target(path, "imatrix", config.force, folder=False)
        return path
    return None


def export_steps(model, config: ExportConfig) -> Iterator:
    """Export ``model`` (a LoadedModel on the transformers backend; its
    in-memory model is the verification reference). Yields ``ExportStarted``,
    ``ExportProgress``/``QuantizerStarted`` events, an optional
    ``Verification``, then ``ExportDone``; returns the ``ExportDone``."""
    t0 = time.perf_counter()
    source = source_from_loaded(model)
    out = config.output
    folder = config.format != "gguf"
    imatrix_final = check_outputs(config)
    _check_source(source, config)
    _check_disk(source, config, out.parent)
    yield ExportStarted(config.format, config.type, source.name, str(out))

    tmp = _partial(out, "partial")
    work = _partial(out, "work")
    imatrix_tmp = _partial(imatrix_final, "partial") if imatrix_final else work / "imatrix.gguf"
    clean_stale_partials(out.parent)
    for p in (tmp, work, imatrix_tmp):
        remove(p)
    try:
        work.mkdir()
        summary, exact = yield from _write(source, config, tmp, work, imatrix_tmp, imatrix_final)
        shutil.rmtree(work, ignore_errors=True)
        verification = None
        if config.verify:
            verification = yield from _verify(source, config, tmp, work, summary, exact)
        if folder:
            write_folder_marker(tmp, config.format, {
                "source": str(source.folder), "qdesk_version": _version(),
                "verification": None if verification is None else verification.to_json()})
        commit(tmp, out, config.format, config.force)
        imatrix_written = None
        if imatrix_final is not None and imatrix_tmp.exists():
            commit(imatrix_tmp, imatrix_final, "imatrix", config.force)
            imatrix_written = str(imatrix_final)
        elif config.imatrix_calib and config.imatrix_calib.lower().endswith(".gguf"):
            imatrix_written = str(Path(config.imatrix_calib).expanduser())
    except (BadInput, OutOfResources):
        raise
    except Exception as e:
        if is_disk_full(e):  # whichever writer failed: gguf-py, safetensors, llama.cpp's quantizer
            raise OutOfResources(f"disk full while exporting to {out}: {_space_needed(source, config)}"
                                 f" free in {out.parent} is needed") from None
        if isinstance(e, OSError):
            raise BadInput(f"cannot write {out}: {e.strerror or e}") from None
        raise
    finally:
        for p in (tmp, work, imatrix_tmp):
            remove(p)
    if folder:
        weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        types, bpw = {}, 8 * weights / max(1, int(source.loaded.facts.parameters or 1))
    else:
        types, bpw = _gguf_facts(out)
    done = ExportDone(
        path=str(out), format=config.format, type=config.type, bytes=_size(out),
        bits_per_weight=round(bpw, 4), seconds=time.perf_counter() - t0, tensor_types=types,
        imatrix=imatrix_written, verification=verification,
        notes=tuple(_notes(summary, verification)),
    )
    yield done
    return done


def _version() -> str:
    from qdesk import __version__

    return __version__


def _write(source, config, tmp, work, imatrix_tmp, imatrix_final):
    """Write the export to ``tmp``; returns (summary dict, exact expected)."""
    from qdesk.core.export import gguf_export, safetensors_export

    t = config.type
    if config.format == "gguf":
        meta = _metadata(source, config)
        if t == "exact":
            from qdesk.core.export.gguf_exact import exact_steps

            summary = yield from exact_steps(source.checkpoint, work, tmp, config.dense_type,
                                             config.widen, meta)
            return summary, True
        if t in CONVERTER_TYPES:
            summary = yield from gguf_export.dense_steps(source, tmp, t, work, meta)
            return summary, False
        summary = yield from gguf_export.llama_steps(source, tmp, config, work, meta,
                                                     imatrix_tmp, imatrix_final)
        return summary, False
    if config.format == "bf16":
        summary = yield from safetensors_export.bf16_steps(source, tmp, config.shard_bytes)
        return summary, source.checkpoint is None and folder_outtype(source.folder) == "bf16"
    if config.format == "gptq":
        summary = yield from safetensors_export.gptq_steps(source, tmp, config.shard_bytes)
        return summary, True
    summary = yield from safetensors_export.compressed_tensors_steps(source, tmp)
    return summary, True


def _verify(source, config, tmp, work, summary, exact) -> Iterator:
    from qdesk.core.export.verify import ACTIVATION_NOTE, verify_steps
    from qdesk.core.models import open_model

    weights_exact, note = None, ""
    rounded = int(summary.get("inexact_scales", 0))
    if config.format == "gguf":
        if config.type == "exact":
            from qdesk.core.export.gguf_exact import check_exact_weights

            differ, checked = yield from check_exact_weights(tmp, source.checkpoint)
            weights_exact = differ == 0
            note = ACTIVATION_NOTE
        candidate = open_model(str(tmp), backend="llamacpp", n_ctx=max(64, config.verify_ctx))
        consumer = "llama.cpp"
    elif config.format == "gptq":
        candidate, consumer, weights_exact = yield from _open_gptq(source, tmp, work)
    else:
        candidate = open_model(str(tmp), backend="hf", dtype="float32")
        consumer = "transformers"
    try:
        result = yield from verify_steps(source.loaded, candidate.backend, consumer,
                                         config.verify_text, config.verify_ctx,
                                         config.verify_chunks, exact, weights_exact, rounded, note)
    finally:
        candidate.close()
    yield result
    return result


def _open_gptq(source, tmp, work):
    """transformers' own GPTQ loader when gptqmodel is installed; otherwise the
    export decoded by qdesk's reference dequantizer (and its weights compared
    with the checkpoint's, bit for bit)."""
    import importlib.util

    import numpy as np
    import torch

    from qdesk.core.export.safetensors_export import dequantized_gptq_folder
    from qdesk.core.models import open_model

    if importlib.util.find_spec("gptqmodel") and importlib.util.find_spec("optimum"):
        return open_model(str(tmp), backend="hf", dtype="float32"), "transformers (gptqmodel)", None
    work.mkdir(exist_ok=True)
    dense = dequantized_gptq_folder(tmp, work / "gptq-dequantized")
    from safetensors import safe_open

    same = True
    ckpt = source.checkpoint
    with safe_open(str(dense / "model.safetensors"), framework="pt") as fh:
        for i, name in enumerate(ckpt.quantized, 1):
            mine = ckpt.record(name).dequantize(torch.float32).numpy()
            theirs = fh.get_tensor(f"{name}.weight").numpy()
            same = same and np.array_equal(mine.view(np.uint32), theirs.view(np.uint32))
            yield ExportProgress("check", i, len(ckpt.quantized), name)
    loaded = open_model(str(dense), backend="hf", dtype="float32")
    return loaded, "transformers (qdesk's GPTQ dequantizer; gptqmodel not installed)", same


def _notes(summary: dict, verification: Verification | None) -> list[str]:
    notes = list(summary.get("notes", []))
    if summary.get("widened"):
        notes.append(f"{len(summary['widened'])} layers of 3 or 2 bits stored exactly in a "
                     "4-bit type (--widen)")
    if summary.get("inexact_scales"):
        notes.append(f"{summary['inexact_scales']} scales changed when rounded to float16 "
                     f"(largest relative change {summary.get('max_scale_rel_error', 0):.2g})")
    if verification is not None and verification.passed is False:
        notes.append("the exact-export bound (mean KLD < 0.001, same top p >= 99%) was not "
                     "reached" + (f": {verification.note}" if verification.note else ""))
    return notes


def run_export(model, config: ExportConfig, on_event=None) -> ExportDone:
    """Drive ``export_steps`` to the end (optionally seeing each event)."""
    gen = export_steps(model, config)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
