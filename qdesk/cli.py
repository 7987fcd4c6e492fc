"""``qdesk``: the app's jobs without a screen.

Exit codes (DESIGN.md): 0 ok, 2 bad input, 3 out of resources, 130 cancelled.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from qdesk.cli_chat import add_chat_parser
from qdesk.cli_compare import add_compare_parser
from qdesk.cli_quantize import add_quantize_parser
from qdesk.core.errors import BadInput, Cancelled, OutOfResources, QdeskError
from qdesk.core.threads import configure_openmp

configure_openmp()  # before torch or llama.cpp start their thread pools

log = logging.getLogger("qdesk")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other bad input
        raise BadInput(f"{self.prog}: {message}")


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except Exception:  # transformers absent or changed: only noise is at stake
        pass


def _progress_to_stderr(stage: str, done: int, total: int) -> None:
    if stage == "download":
        msg = f"downloading {done / 2**20:.0f} / {total / 2**20:.0f} MiB"
    else:
        msg = f"{stage} {done}/{total}"
    print(f"\r{msg}", end="\n" if done >= total else "", file=sys.stderr, flush=True)


def _backends_for(models: Sequence[str], spec: str) -> list[str]:
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) == 1:
        return parts * len(models)
    if len(parts) != len(models):
        raise BadInput(f"--backend names {len(parts)} backends for {len(models)} models")
    return parts


def _add_load_options(p: argparse.ArgumentParser, backend_help: str) -> None:
    p.add_argument("--backend", default="auto", help=backend_help)
    p.add_argument(
        "--dtype", choices=("bfloat16", "float32", "float16"), default=None,
        help="transformers backend: compute dtype (default: bf16 on CUDA, the faster on the CPU)",
    )
    p.add_argument("--n-ctx", type=int, default=None, help="llama.cpp backend: context size")
    p.add_argument(
        "--trust-remote-code", action="store_true",
        help="run Python code shipped with the model (only for models you trust)",
    )


def _load_options(args) -> dict:
    if args.n_ctx is not None and args.n_ctx < 16:
        raise BadInput(f"--n-ctx must be at least 16, got {args.n_ctx}")
    return {
        "backend": args.backend, "dtype": args.dtype, "n_ctx": args.n_ctx,
        "trust_remote_code": args.trust_remote_code,
    }


def cmd_info(args) -> int:
    from qdesk.core.models import open_model

    loaded = open_model(args.model, progress=_progress_to_stderr, **_load_options(args))
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


def cmd_gui(args) -> int:
    from qdesk.app import run_app

    return run_app(args.model)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="qdesk", description="Quantize a language model and see what changed.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("gui", help="open the app")
    g.add_argument("model", nargs="?", default="demo")
    g.set_defaults(func=cmd_gui)

    i = sub.add_parser("info", help="what a model is and what loading it takes")
    i.add_argument("model")
    _add_load_options(i, "auto, hf or llamacpp")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    add_chat_parser(sub)

    add_quantize_parser(sub)
    add_compare_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        _quiet_libraries()
        return args.func(args)
    except QdeskError as e:
        print(f"qdesk: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("qdesk: cancelled", file=sys.stderr)
        return Cancelled.exit_code
    except MemoryError:
        print("qdesk: error: out of memory", file=sys.stderr)
        return OutOfResources.exit_code
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
            print(f"qdesk: error: out of memory ({e})".splitlines()[0], file=sys.stderr)
            return OutOfResources.exit_code
        raise


if __name__ == "__main__":
    sys.exit(main())
