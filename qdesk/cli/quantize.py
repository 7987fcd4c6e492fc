"""``qdesk quantize``: the quantization job without a screen.

A progress line per layer on stderr, or one JSON event per line on stdout with
``--json``. Ctrl-C cancels at the next layer and leaves no files (exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys

from qdesk.core.errors import BadInput

METHODS = ("rtn", "gptq", "awq", "hqq")


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
    q.add_argument("--method", default="rtn", help="rtn, gptq, awq or hqq")
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
                        "not (plain min-max); default: on for symmetric, off for --asym, "
                        "whichever measured better")
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
    q.add_argument("--json", action="store_true", help="JSON events on stdout, one per line")
    q.set_defaults(func=cmd_quantize)
    return q


def _line(event) -> str | None:
    from qdesk.core.quant.events import (
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
    if isinstance(event, SavingCheckpoint):
        return f"saving {event.path}"
    if isinstance(event, QuantizeSummary):
        return (f"done: {event.layers_quantized} layers quantized, {event.layers_kept} kept, "
                f"{event.bits_per_weight:.3f} bits per weight, mean error "
                f"{event.mean_rel_error:.4f}, {event.seconds:.1f} s -> {event.output_dir}")
    return None


def _method_options(args) -> dict:
    """Options that belong to one method; asking them of another is bad input
    (a silently ignored flag would leave the user thinking it took effect)."""
    options = {}
    if args.hqq_zero != "int":
        if args.method != "hqq":
            raise BadInput(f"--hqq-zero applies to --method hqq, not {args.method}")
        options["zero"] = args.hqq_zero
    if args.clip_search is not None:
        if args.method != "rtn":
            raise BadInput(f"--clip-search applies to --method rtn, not {args.method}")
        options["clip_search"] = args.clip_search
    return options


def cmd_quantize(args) -> int:
    from pathlib import Path

    from qdesk.core.models import open_model, resolve
    from qdesk.core.quant.calibration import build_calibration
    from qdesk.core.quant.checkpoint import check_output_dir
    from qdesk.core.quant.configs import make_config
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
    ref = resolve(args.model)
    if ref.kind == "qdesk" or ref.kind == "gguf":
        raise BadInput(f"{args.model} is already quantized; quantize the original model")
    loaded = open_model(ref, backend="hf")
    calibration = build_calibration(
        args.calib, loaded.hf_tokenizer, args.calib_samples, args.calib_tokens, args.seed,
        chat_template=args.chat_template, model=loaded.model,
    )
    steps = quantize_steps(loaded, config, plan, calibration, output_dir=out, force=args.force)
    try:
        for event in steps:
            if args.json:
                print(json.dumps(event.to_json()), flush=True)
            else:
                line = _line(event)
                if line:
                    print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        steps.close()  # restores the model; nothing was written
        raise
    return 0
