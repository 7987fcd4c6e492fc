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


def cmd_chat(args) -> int:
    from qdesk.core.chat.events import ReplyDone, SamplingConfig
    from qdesk.core.chat.session import ChatSession, PaneDone
    from qdesk.core.models import open_model, resolve

    if not args.prompt.strip():
        raise BadInput("the prompt is empty")
    sampling = SamplingConfig(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
        max_new_tokens=args.max_new_tokens, stop=tuple(args.stop or ()),
    )
    refs = [resolve(m) for m in args.models]  # every argument checked before any load
    backends = _backends_for(args.models, args.backend)
    options = _load_options(args)
    options.pop("backend")
    loaded = [
        open_model(ref, backend=b, progress=_progress_to_stderr, **options)
        for ref, b in zip(refs, backends)
    ]
    session = ChatSession([m.backend for m in loaded], sampling, system=args.system)
    tokens: dict[int, list] = {i: [] for i in range(len(loaded))}
    replies: dict[int, ReplyDone] = {}
    for event in session.send(args.prompt):
        if isinstance(event, PaneDone):
            replies[event.pane] = event.reply
        else:
            tokens[event.pane].append(event.event)
    if args.json:
        out = {"replies": []}
        for i, m in enumerate(loaded):
            r = replies[i]
            out["replies"].append({
                "model": m.facts.name, "backend": m.facts.backend, "text": r.text,
                "n_tokens": r.n_tokens, "prompt_tokens": r.prompt_tokens,
                "finish_reason": r.finish_reason,
                "seconds": r.seconds, "decode_tokens_per_second": r.decode_tokens_per_second,
                "tokens": [t.to_json() for t in tokens[i]],
            })
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for i, m in enumerate(loaded):
        r = replies[i]
        print(f"== {m.facts.name} [{m.facts.backend}, {m.facts.device} {m.facts.dtype}] ==")
        print(r.text)
        print(
            f"-- {r.n_tokens} tokens ({r.finish_reason}), prompt {r.prompt_tokens} tokens, "
            f"{r.decode_tokens_per_second:.1f} tokens/s\n"
        )
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

    c = sub.add_parser("chat", help="one prompt to several models, side by side")
    c.add_argument("models", nargs="+", metavar="MODEL", help="the first is the reference")
    c.add_argument("--prompt", required=True)
    c.add_argument("--system", default=None)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--top-k", type=int, default=0)
    c.add_argument("--repetition-penalty", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.add_argument("--stop", action="append", help="a stop string (repeatable)")
    _add_load_options(c, "auto, hf or llamacpp; one for all models or a comma list, one per model")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_chat)

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
