"""GGUF exports written by llama.cpp's tools: dense (F32/F16/BF16/Q8_0, its
converter) and llama.cpp's quantized types (its quantizer, with qdesk's
importance matrix and a qdesk plan as per-tensor types)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.export.checkpoint_source import write_dense_folder
from qdesk.core.export.config import ExportConfig
from qdesk.core.export.events import ExportProgress
from qdesk.core.export.gguf_io import copied, open_reader, tensor_rows, write_gguf
from qdesk.core.export.rowmap import RowIndex, RowSource
from qdesk.core.export.sources import ExportSource, folder_outtype, linear_weights

# qdesk plan bits -> the llama.cpp type a rule sets
PLAN_TYPES = {8: "Q8_0", 6: "Q6_K", 5: "Q5_K", 4: "Q4_K", 3: "Q3_K", 2: "Q2_K"}


def _converted_source(source: ExportSource, work: Path, outtype: str | None,
                      target: Path) -> Iterator[ExportProgress]:
    """Convert the source (a checkpoint: its dequantized model) to GGUF ``target``."""
    from qdesk.core.models.hf_to_gguf import convert_steps

    folder = source.folder
    if source.checkpoint is not None:
        folder = work / "dequantized"
        names = source.checkpoint.quantized
        for i, name in enumerate(write_dense_folder(source.checkpoint, folder), 1):
            yield ExportProgress("dequantize", i, len(names), name)
        outtype = outtype or "f32"
    outtype = outtype or folder_outtype(folder)
    for p in convert_steps(folder, target, outtype):
        yield ExportProgress("convert", p.done, p.total, p.name or p.stage)


def dense_steps(source: ExportSource, out_tmp: Path, type_name: str, work: Path,
                metadata: dict) -> Iterator[ExportProgress]:
    """F32/F16/BF16/Q8_0 by llama.cpp's converter, qdesk's keys added."""
    converted = work / "converted.gguf"
    yield from _converted_source(source, work, type_name.lower(), converted)
    reader = open_reader(converted)
    tensors = [copied(t) for t in reader.tensors]
    for i in write_gguf(out_tmp, reader, tensors, metadata):
        yield ExportProgress("write", i + 1, len(tensors), tensors[i].name)
    return {"tensor_types": dict(Counter(t.type_name for t in tensors))}


def map_linears(source: ExportSource, gguf_path: Path) -> Iterator[ExportProgress]:
    """GGUF tensor -> the transformers Linears its rows are (``rowmap``)."""
    index = RowIndex()
    for i, (name, w) in enumerate(linear_weights(source), 1):
        index.add(name, w)
        yield ExportProgress("map", i, 0, name)
    reader = open_reader(gguf_path)
    found: dict[str, RowSource] = {}
    for t in reader.tensors:
        if len(t.shape) >= 2 and int(t.shape[0]) in index.widths():
            rs = index.find(t.name, tensor_rows(t))
            if rs is not None:
                found[t.name] = rs
    if not found:
        raise BadInput(f"no tensor of the GGUF of {source.name} matches a Linear of the model")
    return found


def plan_overrides(plan, sources: dict[str, RowSource], types: dict[str, str]
                   ) -> tuple[list[tuple[str, str]], list[str]]:
    """A qdesk plan's rules as llama.cpp tensor-type overrides: a rule's bits
    pick a type (8 -> Q8_0, 4 -> Q4_K, 3 -> Q3_K, 2 -> Q2_K), keep leaves the
    tensor in its dense type. Returns (overrides, notes)."""
    overrides, notes = [], []
    if plan.sensitivity:
        raise BadInput("a sensitivity plan measures while quantizing: quantize with qdesk, then "
                       "export --type exact (or give a plan of rules)")
    ignored = False
    for gguf_name, rs in sources.items():
        module = rs.sources[0]
        rule = next((r for r in plan.rules if r.matches(module)), None)
        if rule is None:
            continue
        if rule.keep:
            want = types[gguf_name]
        elif rule.bits is not None:
            want = PLAN_TYPES.get(rule.bits)
            if want is None:
                raise BadInput(f"plan rule {rule.match!r}: no llama.cpp type for {rule.bits} bits")
        else:
            ignored = True
            continue
        if rule.group_size is not None or rule.method is not None:
            ignored = True
        overrides.append((f"^{re.escape(gguf_name)}$", want))
    if ignored:
        notes.append("the plan's group sizes and methods do not apply to llama.cpp's types "
                     "(only keep and bits did)")
    return overrides, notes


def llama_steps(source: ExportSource, out_tmp: Path, config: ExportConfig, work: Path,
                metadata: dict, imatrix_tmp: Path, imatrix_final: Path | None
                ) -> Iterator[ExportProgress]:
    """llama.cpp's quantizer on the converted source. Returns a summary dict."""
    from qdesk.core.export.imatrix import collect_steps, gguf_imatrix, read_imatrix, write_imatrix
    from qdesk.core.export.llama_quantize import quantize_steps
    from qdesk.core.export.target import GGUF_MARKER

    intermediate = work / "source.gguf"
    yield from _converted_source(source, work, None, intermediate)
    notes: list[str] = []
    sources: dict[str, RowSource] = {}
    reuse = config.imatrix_calib is not None and config.imatrix_calib.lower().endswith(".gguf")
    if (config.imatrix_calib is not None and not reuse) or config.plan is not None:
        sources = yield from map_linears(source, intermediate)

    imatrix_path = None
    imx = None
    if reuse:
        imatrix_path = Path(config.imatrix_calib).expanduser()
        if not imatrix_path.is_file():
            raise BadInput(f"--imatrix-calib {config.imatrix_calib}: no such file")
        imx = read_imatrix(imatrix_path)
    elif config.imatrix_calib is not None:
        from qdesk.core.quant.calibration import build_calibration

        loaded = source.loaded
        calibration = build_calibration(config.imatrix_calib, loaded.hf_tokenizer,
                                        config.calib_samples, config.calib_tokens, config.seed,
                                        model=loaded.model)
        stats = yield from collect_steps(loaded.model, calibration)
        imx = gguf_imatrix(stats, sources)
        arch = open_reader(intermediate).get_field("general.architecture").contents()
        write_imatrix(imatrix_tmp, imx, arch, {GGUF_MARKER: "imatrix",
                                               "qdesk.imatrix.source": str(source.folder)})
        imatrix_path = imatrix_tmp

    overrides: list[tuple[str, str]] = []
    if config.plan is not None:
        from qdesk.core.quant.plans import load_plan

        types = {t.name: t.tensor_type.name for t in open_reader(intermediate).tensors}
        overrides, plan_notes = plan_overrides(load_plan(config.plan), sources, types)
        notes += plan_notes
        metadata = {**metadata, "qdesk.export.plan": str(config.plan)[:127]}
    if imx is not None:
        shown = imatrix_final if imatrix_final is not None else imatrix_path
        metadata = {
            **metadata,
            # the keys llama-quantize writes when it is given an imatrix
            "quantize.imatrix.file": str(shown)[-127:],
            "quantize.imatrix.dataset": imx.datasets[0][:127],
            "quantize.imatrix.entries_count": len(imx.entries),
            "quantize.imatrix.chunks_count": int(imx.chunk_count),
        }
    yield from quantize_steps(intermediate, out_tmp, config.type, imatrix=imatrix_path,
                              overrides=overrides, metadata=metadata, threads=config.threads,
                              work=work)
    reader = open_reader(out_tmp)
    return {
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "imatrix_entries": 0 if imx is None else len(imx.entries),
        "imatrix_reused": reuse,
        "overrides": len(overrides),
        "notes": notes,
    }
