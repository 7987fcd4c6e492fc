"""``qdesk quantize``: the quantization job without a screen.

A progress line per layer on stderr, or one JSON event per line on stdout with
``--json``; the last lines give the summary and the job's self-check (and a
warning when the result is implausible). Ctrl-C cancels at the next layer and
leaves no files (exit 130).

Sources already quantized are refused (a qdesk checkpoint, a compressed-tensors,
GPTQ or AWQ folder): quantizing their dequantized weights again compounds two
roundings. A GGUF file is the exception when asked for (``--from-quantized``):
its dequantized dense copy is quantized, and the result says it started from
quantized weights. The demo needs no flag: its dense copy of the shipped Q4_1
file is the project's reference model; a note says so.
"""

from __future__ import annotations

import argparse
import json
import sys

from qdesk.cli.common import progress_to_stderr
from qdesk.core.errors import BadInput

METHODS = ("rtn", "gptq", "awq", "hqq", "signround")


def _group_size(text: str) -> int:
    if text in ("-1", "channel", "per-channel"):
        return -1
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a group size: {text!r}") from None


def add_quantize_parser(subparsers) -> argparse.ArgumentParser:
    q = subparsers.add_parser("quantize", help="quantize a model and save a checkpoint")
    q.add_argument("model", help="demo, a model folder or a hub id")
    q.add_argument("--method", default="rtn", help="rtn, gptq, awq, hqq or signround")
    q.add_argument("--bits", type=int, default=4, help="8, 4, 3 or 2")
    q.add_argument("--group-size", type=_group_size, default=64,
                   help="32, 64, 128, ... or -1 / channel for one group per output row")
    q.add_argument("--asym", action="store_true", help="integer zero point (HQQ always)")
    q.add_argument("--hqq-zero", choices=("int", "float"), default="int",
                   help="HQQ's zero point: int (packed checkpoint, bits + 16 per group) or "
                        "float (16-bit like the scale, bits + 32 per group; the checkpoint "
                        "stores codes unpacked as int8, about twice the file size)")
    q.add_argument("--clip-search", action=argparse.BooleanOptionalAction, default=None,
                   help="RTN: narrow each group's range to the least squared weight error, or "
                        "not (plain min-max); default: on only with --narrow-grid, "
                        "whichever measured better")
    q.add_argument("--act-weighted", action=argparse.BooleanOptionalAction, default=None,
                   help="RTN and GPTQ: choose each group's range by the rounding error weighted "
                        "by the calibration inputs' mean square, or by the plain weight error "
                        "(default: on for GPTQ, off for RTN, whose plain form needs no "
                        "calibration)")
    q.add_argument("--dense-targets", action=argparse.BooleanOptionalAction, default=None,
                   help="GPTQ and SignRound: aim each layer at the dense model's own output, so "
                        "it also makes up for the error of the layers before it (default: on "
                        "for SignRound; off for GPTQ, where it costs about twice the time)")
    q.add_argument("--iters", type=int, default=None,
                   help="SignRound: signed-gradient iterations per decoder block (default 100)")
    q.add_argument("--batch-size", type=int, default=None,
                   help="SignRound: calibration samples per iteration (default 4)")
    q.add_argument("--narrow-grid", action="store_true",
                   help="symmetric: the older grid max|w| / (2^(b-1) - 1), one code unused "
                        "(default: all 2^b codes, as llama.cpp's Q4_0)")
    q.add_argument("--plan", default="uniform",
                   help="uniform, attn-keep, mlp-keep, qk-keep, sensitivity, or a .yaml/.json file")
    q.add_argument("--budget-bpw", type=float, default=None,
                   help="sensitivity plan: average bits per weight to spend")
    q.add_argument("--calib", default="mix",
                   help="mix, general, code, chat, reasoning, zh, self, a .txt/.jsonl file or hf:NAME")
    q.add_argument("--calib-samples", type=int, default=128)
    q.add_argument("--calib-tokens", type=int, default=512)
    q.add_argument("--chat-template", action="store_true",
                   help="wrap calibration file samples in the model's chat template")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("-o", "--output", required=True, help="output folder (must not exist)")
    q.add_argument("--force", action="store_true", help="replace an earlier qdesk checkpoint there")
    q.add_argument("--from-quantized", action="store_true",
                   help="quantize a GGUF file's dequantized dense copy (it starts from "
                        "quantized weights, so the result carries both roundings)")
    q.add_argument("--no-self-check", action="store_true",
                   help="skip scoring the result against the original on held-out text")
    q.add_argument("--json", action="store_true", help="JSON events on stdout, one per line")
    q.set_defaults(func=cmd_quantize)
    return q


def _line(event) -> str | None:
    from qdesk.core.quant.events import (
        BlockTuned,
        CalibrationProgress,
        LayerKept,
        LayerQuantized,
        QuantizeSummary,
        SavingCheckpoint,
    )

    if isinstance(event, CalibrationProgress):
        return f"{event.stage} {event.done}/{event.total}" if event.done == event.total else None
    if isinstance(event, LayerQuantized):
        g = "ch" if event.group_size == -1 else event.group_size
        return (f"[{event.index}/{event.total}] {event.name}: {event.method} {event.bits}-bit "
                f"g{g} error {event.rel_error:.4f} ({event.seconds:.2f} s)")
    if isinstance(event, LayerKept):
        return f"{event.name}: kept ({event.reason})"
    if isinstance(event, BlockTuned):
        return (f"block {event.block}/{event.blocks}: {event.iterations} iterations, output "
                f"error {event.loss_start:.3g} -> {event.loss_best:.3g} ({event.seconds:.1f} s)")
    if isinstance(event, SavingCheckpoint):
        return f"saving {event.path}"
    if isinstance(event, QuantizeSummary):
        lines = [f"done: {event.layers_quantized} layers quantized, {event.layers_kept} kept, "
                 f"{event.bits_per_weight:.3f} bits per weight, mean error "
                 f"{event.mean_rel_error:.4f}, {event.seconds:.1f} s -> {event.output_dir}"]
        if event.check is not None:
            lines += check_lines(event.check)
        if event.source_quantization:
            lines.append(f"note: started from {event.source_quantization} weights")
        return "\n".join(lines)
    return None


def check_lines(check) -> list[str]:
    """The self-check in one line, and a loud second one when it is implausible."""
    rtn = ("" if check.rtn_mean_kld is None else
           f"; plain RTN of the same format {check.rtn_mean_kld:.4f}, same top "
           f"{100 * check.rtn_same_top_p:.1f}%")
    lines = [f"self-check on {check.text} ({check.windows} windows, {check.tokens} tokens, "
             f"{check.seconds:.1f} s): mean KLD {check.mean_kld:.4f}, same top "
             f"{100 * check.same_top_p:.1f}%{rtn}"]
    if not check.plausible:
        lines.append(f"qdesk: WARNING: implausible result: {check.warning}")
    return lines


# Options left unset (None) unless given, and the methods each belongs to: the
# option's name is the config field's.
METHOD_FLAGS = {
    "clip_search": ("rtn",),
    "act_weighted": ("rtn", "gptq"),
    "dense_targets": ("gptq", "signround"),
    "iters": ("signround",),
    "batch_size": ("signround",),
}


def _method_options(args) -> dict:
    """Options that belong to one method; asking them of another is bad input
    (a silently ignored flag would leave the user thinking it took effect)."""
    options = {}
    if args.hqq_zero != "int":
        if args.method != "hqq":
            raise BadInput(f"--hqq-zero applies to --method hqq, not {args.method}")
        options["zero"] = args.hqq_zero
    for name, methods in METHOD_FLAGS.items():
        value = getattr(args, name, None)
        if value is not None:
            if args.method not in methods:
                raise BadInput(f"--{name.replace('_', '-')} applies to --method "
                               f"{' or '.join(methods)}, not {args.method}")
            options[name] = value
    if getattr(args, "narrow_grid", False):
        if args.asym or args.method == "hqq":
            raise BadInput("--narrow-grid applies to symmetric quantization (drop --asym)")
        options["narrow_grid"] = True
    return options


def cmd_quantize(args) -> int:
    from pathlib import Path

    from qdesk.core.models import open_model, resolve
    from qdesk.core.quant.calibration import build_calibration, check_calibration
    from qdesk.core.quant.checkpoint import check_output_dir
    from qdesk.core.quant.configs import make_config
    from qdesk.core.quant.events import QuantizeSummary
    from qdesk.core.quant.plans import load_plan
    from qdesk.core.quant.steps import quantize_steps

    if args.method not in METHODS:
        raise BadInput(f"unknown method '{args.method}' (choose {', '.join(METHODS)})")
    symmetric = not args.asym and args.method != "hqq"
    config = make_config(args.method, bits=args.bits, group_size=args.group_size,
                         symmetric=symmetric, **_method_options(args))
    plan = load_plan(args.plan, args.budget_bpw)
    out = Path(args.output).expanduser()
    check_output_dir(out, args.force)  # before the minutes of loading and calibrating
    check_calibration(args.calib, args.calib_samples, args.calib_tokens)
    ref = resolve(args.model)
    source_quantization = _source_quantization(ref, args.model, args.from_quantized)
    if source_quantization:
        print(f"note: {args.model}: {_SOURCE_NOTES[ref.kind]}", file=sys.stderr, flush=True)
    elif args.from_quantized:
        raise BadInput(f"--from-quantized: {args.model} holds no quantized weights")
    loaded = open_model(ref, backend="hf", progress=progress_to_stderr)
    calibration = build_calibration(
        args.calib, loaded.hf_tokenizer, args.calib_samples, args.calib_tokens, args.seed,
        chat_template=args.chat_template, model=loaded.model,
    )
    options = {"check": None} if args.no_self_check else {}
    steps = quantize_steps(loaded, config, plan, calibration, output_dir=out, force=args.force,
                           from_quantized=args.from_quantized,
                           source_quantization=source_quantization, **options)
    try:
        for event in steps:
            if args.json:
                print(json.dumps(event.to_json()), flush=True)
                if isinstance(event, QuantizeSummary) and event.check and not event.check.plausible:
                    print(check_lines(event.check)[-1], file=sys.stderr, flush=True)
            else:
                line = _line(event)
                if line:
                    print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        steps.close()  # restores the model; nothing was written
        raise
    return 0


_SOURCE_NOTES = {
    "gguf": ("quantizing the dequantized dense copy of this GGUF file: the result starts "
             "from its already quantized weights, not the original ones"),
    "demo": ("the demo's reference is the dense copy of its shipped Q4_1 GGUF: its weights "
             "lie on a 4-bit group-32 grid, so the result starts from quantized weights"),
}


def _source_quantization(ref, text: str, from_quantized: bool) -> str | None:
    """How the source was quantized before, in words, when the loaded model's
    facts may not say (the job prefers theirs); refuses what cannot be quantized
    again before minutes of loading."""
    if ref.kind == "demo":
        return "Q4_1 GGUF (the demo's shipped file)"
    if ref.kind == "gguf":
        from qdesk.core.models.gguf_header import read_header

        types = read_header(ref.path).quantized_types  # validates the untrusted header
        if not types:  # F32/F16/BF16 only: nothing was rounded
            return None
        if not from_quantized:
            raise BadInput(
                f"{text} is a {'/'.join(types)} GGUF file, already quantized; pass "
                "--from-quantized to quantize its dequantized dense copy (the result then "
                "carries both roundings), or quantize the original model"
            )
        return f"{'/'.join(types)} GGUF {ref.path.name}"
    if ref.kind == "qdesk":
        raise BadInput(f"{text} is a qdesk checkpoint, already quantized; quantize the original model")
    if ref.kind == "hf":
        method = _quantization_method(ref.path)
        if method:
            raise BadInput(f"{text} is already quantized ({method}); quantize the original model")
    if from_quantized:
        raise BadInput(f"--from-quantized applies to a quantized .gguf file, not {text}")
    return None


def _quantization_method(folder) -> str | None:
    """The quant_method a folder's config.json declares, if any (compressed-tensors,
    gptq, awq, ...); an unreadable config is left for the loader to report."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    if not quant:
        return None
    return str(quant.get("quant_method", "quantized")) if isinstance(quant, dict) else "quantized"
