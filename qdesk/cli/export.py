"""``qdesk export``: a model or a qdesk checkpoint as GGUF or safetensors.

Progress on stderr (a line per stage, and tenths of the long ones), or one
JSON event per line on stdout with ``--json``. The written file is reopened in
its consumer and compared with the in-memory model on held-out text; the last
lines say how it went. Ctrl-C cancels and leaves no files (exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys

from qdesk.cli.common import progress_to_stderr
from qdesk.core.errors import BadInput

_STAGES = {
    "dequantize": "dequantizing", "convert": "llama.cpp converter", "map": "matching rows",
    "imatrix": "importance matrix", "quantize": "llama.cpp quantizer", "write": "writing",
    "check": "checking weights", "verify": "verifying",
}


def _size(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 500M)") from None


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    from qdesk.core.export import DENSE_TYPES, FORMATS

    e = subparsers.add_parser(
        "export", help="write a model as GGUF or safetensors and verify it in its consumer",
        description=(
            "GGUF: --type F16/BF16/Q8_0/F32 (llama.cpp's converter), a llama.cpp type such as "
            "Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q2_K, IQ4_XS (llama.cpp's quantizer, optionally with "
            "an importance matrix qdesk computes), or exact (a qdesk checkpoint's own codes as "
            "Q4_0/Q5_0/Q8_0). Safetensors: gptq, compressed-tensors (qdesk checkpoints), bf16."),
    )
    e.add_argument("model", help="demo, a model folder, a qdesk checkpoint, a .gguf file or a hub id")
    e.add_argument("--format", required=True, choices=FORMATS)
    e.add_argument("--type", default=None,
                   help="GGUF type: exact, F32, F16, BF16, Q8_0, Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, "
                        "Q2_K, IQ4_XS, ... (required with --format gguf)")
    e.add_argument("-o", "--output", required=True, help="the .gguf file or the output folder")
    e.add_argument("--force", action="store_true",
                   help="replace a previous qdesk export of the same kind there (nothing else)")
    e.add_argument("--allow-requantize", action="store_true",
                   help="re-quantize already quantized weights to a lossy type")
    e.add_argument("--imatrix-calib", default=None, metavar="NAME|FILE",
                   help="llama.cpp types: an importance matrix from a calibration set (mix, "
                        "general, code, chat, reasoning, zh, a .txt/.jsonl file) or an imatrix "
                        ".gguf to reuse")
    e.add_argument("--imatrix-out", default=None,
                   help="where to write the importance matrix (default: OUTPUT.imatrix.gguf)")
    e.add_argument("--calib-samples", type=int, default=64)
    e.add_argument("--calib-tokens", type=int, default=512)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--plan", default=None,
                   help="llama.cpp types: a qdesk plan (attn-keep, a .yaml/.json file) as "
                        "per-tensor types")
    e.add_argument("--dense-type", default="auto", choices=DENSE_TYPES,
                   help="--type exact: the type of the tensors qdesk did not quantize")
    e.add_argument("--widen", action="store_true",
                   help="--type exact: store 3- and 2-bit codes exactly in Q4_0/Q5_0")
    e.add_argument("--shard-size", type=_size, default=4 * 2**30,
                   help="safetensors: largest shard (default 4G)")
    e.add_argument("--no-verify", action="store_true", help="skip reopening the export")
    e.add_argument("--verify-text", default="heldout",
                   help="held-out text for the verification (heldout, heldout-en, heldout-zh, a file)")
    e.add_argument("--verify-ctx", type=int, default=256)
    e.add_argument("--verify-chunks", type=int, default=8)
    e.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="the in-memory model's compute dtype (float32: the verification's "
                        "reference computes exactly what the weights say)")
    e.add_argument("--threads", type=int, default=0, help="llama.cpp quantizer threads (0: all)")
    e.add_argument("--trust-remote-code", action="store_true",
                   help="run Python code shipped with the model (only for models you trust)")
    e.add_argument("--json", action="store_true", help="JSON events on stdout, one per line")
    e.set_defaults(func=cmd_export)
    return e


class _Lines:
    """Progress lines: one when a stage ends, and at each tenth of a long one."""

    def __init__(self) -> None:
        self.stage = None
        self.last = None
        self.tenth = -1

    def event(self, ev) -> None:
        from qdesk.core.export import ExportProgress, ExportStarted, QuantizerStarted

        if isinstance(ev, ExportStarted):
            _err(f"exporting {ev.source} as {ev.format}"
                 + (f" {ev.type}" if ev.type != ev.format else "") + f" -> {ev.target}")
        elif isinstance(ev, QuantizerStarted):
            self.flush()
            _err(f"llama.cpp quantizer running ({ev.ftype}, pid {ev.pid})")
        elif isinstance(ev, ExportProgress):
            if ev.stage != self.stage:
                self.flush()
                self.stage, self.tenth = ev.stage, -1
            self.last = ev
            if ev.total and ev.stage in ("quantize", "imatrix", "verify", "write", "dequantize"):
                tenth = 10 * ev.done // ev.total
                if tenth > self.tenth and ev.done < ev.total:
                    self.tenth = tenth
                    _err(f"{_STAGES.get(ev.stage, ev.stage)} {ev.done}/{ev.total}")

    def flush(self) -> None:
        ev = self.last
        if ev is not None:
            count = f"{ev.done}/{ev.total}" if ev.total else f"{ev.done}"
            if ev.stage == "convert" and ev.total == 100:
                count = "done"
            _err(f"{_STAGES.get(ev.stage, ev.stage)} {count}")
        self.last = None


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def verification_lines(v) -> list[str]:
    lines = []
    if v.weights_exact is not None:
        lines.append("weights: " + ("exact (the file decodes to qdesk's weights bit for bit)"
                                    if v.weights_exact else
                                    f"not bit-exact ({v.rounded_scales} scales rounded to float16)"))
    lines.append(
        f"verified in {v.consumer} against the in-memory model ({v.text}, {v.windows} x "
        f"{v.ctx} tokens, {v.tokens} scored): mean KLD {v.mean_kld:.4g}, same top p "
        f"{100 * v.same_top_p:.2f}%, PPL ratio {v.ppl_ratio:.4f} ({v.seconds:.0f} s)")
    if v.passed is True:
        lines.append("exact export: within the bound (mean KLD < 0.001, same top p >= 99%)")
    elif v.passed is False:
        lines.append("exact export: NOT within the bound (mean KLD < 0.001, same top p >= 99%)"
                     + (f"; {v.note}" if v.note else ""))
    return lines


def _done_lines(done) -> list[str]:
    size = done.bytes / 2**20
    what = done.format if done.type == done.format else f"{done.format} {done.type}"
    lines = [f"done: {done.path} ({what}, {size:.1f} MiB, {done.bits_per_weight:.2f} bits per "
             f"weight, {done.seconds:.1f} s)"]
    if done.tensor_types:
        lines.append("tensor types: " + ", ".join(f"{k} {v}" for k, v in sorted(done.tensor_types.items())))
    if done.imatrix:
        lines.append(f"importance matrix: {done.imatrix}")
    if done.verification is not None:
        lines += verification_lines(done.verification)
    lines += [f"note: {n}" for n in done.notes if not (done.verification and done.verification.note
                                                        and done.verification.note in n)]
    return lines


def cmd_export(args) -> int:
    from qdesk.core.export import (
        ExportConfig,
        ExportDone,
        Verification,
        check_outputs,
        export_steps,
    )
    from qdesk.core.models import open_model, resolve

    if args.format == "gguf" and not args.type:
        raise BadInput("--format gguf needs --type (exact, F16, BF16, Q8_0, Q4_K_M, ...)")
    config = ExportConfig(
        format=args.format, output=args.output, type=args.type, force=args.force,
        allow_requantize=args.allow_requantize, imatrix_calib=args.imatrix_calib,
        imatrix_out=args.imatrix_out, calib_samples=args.calib_samples,
        calib_tokens=args.calib_tokens, seed=args.seed, plan=args.plan,
        dense_type=args.dense_type, widen=args.widen, shard_bytes=args.shard_size,
        verify=not args.no_verify, verify_text=args.verify_text, verify_ctx=args.verify_ctx,
        verify_chunks=args.verify_chunks, threads=args.threads,
    )
    check_outputs(config)  # before the seconds to minutes of loading
    if config.verify:
        from qdesk.core.compare.texts import load_text

        load_text(config.verify_text)
    ref = resolve(args.model)
    loaded = open_model(ref, backend="hf", progress=progress_to_stderr, dtype=args.dtype,
                        trust_remote_code=args.trust_remote_code)
    lines = _Lines()
    steps = export_steps(loaded, config)
    try:
        for event in steps:
            if args.json:
                print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)
            elif isinstance(event, ExportDone):
                lines.flush()
                for line in _done_lines(event):
                    _err(line)
            elif not isinstance(event, Verification):
                lines.event(event)
    except KeyboardInterrupt:
        steps.close()  # removes the partial file and the scratch folder
        raise
    finally:
        loaded.close()
    return 0
