"""``qdesk info``: what a model is and what loading it takes."""

from __future__ import annotations

import json

from qdesk.cli.common import (
    add_load_options,
    load_options,
    note_int8_activations,
    progress_to_stderr,
)


def add_info_parser(sub) -> None:
    i = sub.add_parser("info", help="what a model is and what loading it takes")
    i.add_argument("model")
    add_load_options(i, "auto, hf or llamacpp")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from qdesk.core.models import open_model

    loaded = open_model(args.model, progress=progress_to_stderr, **load_options(args))
    note_int8_activations(args, [loaded])
    facts = loaded.facts
    if args.json:
        print(json.dumps(facts.to_json(), indent=2))
        return 0
    rows = [
        ("model", facts.name), ("source", f"{facts.source}: {facts.path}"),
        ("backend", facts.backend), ("architecture", facts.architecture),
        ("parameters", f"{facts.parameters:,}"), ("layers", facts.layers),
        ("hidden size", facts.hidden_size), ("vocabulary", f"{facts.vocab_size:,}"),
        ("context", f"{facts.context_length:,}"),
        ("dtype", f"{facts.dtype} ({facts.dtype_reason})"), ("device", facts.device),
        ("memory", f"{facts.memory_bytes / 2**20:,.0f} MiB"),
    ]
    if facts.quantization:
        rows.append(("quantization", json.dumps(facts.quantization)))
    for key, value in rows:
        print(f"{key:>13}: {value}")
    return 0
