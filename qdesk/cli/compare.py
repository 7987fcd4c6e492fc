"""``qdesk compare``: divergence over fixed text, or reply lengths over prompts."""

from __future__ import annotations

import json
import logging
import sys

from qdesk.cli.common import (
    add_load_options,
    backends_for,
    load_options,
    note_int8_activations,
    progress_to_stderr,
    status_line,
)
from qdesk.core.errors import BadInput

log = logging.getLogger("qdesk.compare")


def add_compare_parser(subparsers) -> None:
    c = subparsers.add_parser(
        "compare",
        help="how far models are from a reference: divergence on text, or reply lengths",
        description=(
            "With --text: llama-perplexity --kl-divergence statistics over windows of fixed "
            "text (second half of each window scored), plus flips by reference margin. "
            "With --prompts: reply lengths per model with bootstrap intervals."
        ),
    )
    c.add_argument("reference", metavar="REFERENCE")
    c.add_argument("models", nargs="+", metavar="MODEL")
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="heldout, heldout-en, heldout-zh or a UTF-8 file")
    what.add_argument(
        "--prompts", help="knowledge, reasoning (or e.g. reasoning-zh), or a file: one prompt "
        "a line, or .jsonl with \"prompt\" (and \"answer\")",
    )
    c.add_argument("--ctx", type=int, default=512, help="window length in tokens (--text)")
    c.add_argument("--chunks", type=int, default=None, help="at most this many windows")
    c.add_argument("--max-new-tokens", type=int, default=256, help="(--prompts)")
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (--prompts)")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--top-k", type=int, default=0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--samples", type=int, default=1, help="replies per prompt when sampling")
    # --dtype matters here: on a CPU the reference's compute dtype is otherwise
    # whichever a timing on this machine chose, and it moves every figure.
    add_load_options(c, "auto, hf or llamacpp; one for all models or a comma list, reference first")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)


def _progress(text: str, done: bool = False) -> None:
    status_line(text, finished=done)


def _load(args):
    from qdesk.core.models import open_model, resolve

    names = [args.reference, *args.models]
    refs = [resolve(m) for m in names]  # every argument checked before any load
    kinds = backends_for(names, args.backend)
    options = load_options(args)
    options.pop("backend")
    try:
        reference = open_model(refs[0], backend=kinds[0], progress=progress_to_stderr, **options)
    except BadInput as e:
        raise BadInput(f"the reference failed to load: {e}") from None
    models, skipped = [], []
    ref_fp = reference.backend.tokenizer.fingerprint()
    for ref, kind in zip(refs[1:], kinds[1:]):
        m = open_model(ref, backend=kind, progress=progress_to_stderr, **options)
        if m.backend.tokenizer.fingerprint() != ref_fp:
            reason = (f"{m.facts.name} and the reference {reference.facts.name} use different "
                      "vocabularies (token ids differ): no statistics")
            print(f"qdesk: {reason}", file=sys.stderr)
            skipped.append({"model": m.facts.name, "reason": reason})
            m.close()
            continue
        models.append(m)
    if not models:
        raise BadInput("no model shares the reference's vocabulary: nothing to compare")
    return reference, models, skipped


def cmd_compare(args) -> int:
    from qdesk.core.compare.texts import load_prompts, load_text

    # Check the cheap inputs before loading any model.
    if args.text is not None:
        text_name, text = load_text(args.text)
        if args.ctx < 4:
            raise BadInput(f"--ctx must be at least 4, got {args.ctx}")
        if args.chunks is not None and args.chunks < 1:
            raise BadInput(f"--chunks must be at least 1, got {args.chunks}")
    else:
        set_name, prompts = load_prompts(args.prompts)
        _prompt_sampling(args)  # its checks, before the models load
        if args.samples < 1:
            raise BadInput(f"--samples must be at least 1, got {args.samples}")
    reference, models, skipped = _load(args)
    note_int8_activations(args, models)  # the reference is exact by design
    try:
        if args.text is not None:
            out = _compare_text(args, reference, models, text_name, text)
        else:
            out = _compare_prompts(args, reference, models, set_name, prompts)
    finally:
        for m in [reference, *models]:
            m.close()
    if args.json:
        out["skipped"] = skipped
        # How each model ran: the figures depend on the compute dtype and backend.
        out["loaded"] = [
            {"model": m.facts.name, "backend": m.facts.backend, "device": m.facts.device,
             "dtype": m.facts.dtype, "role": "reference" if i == 0 else "model"}
            for i, m in enumerate([reference, *models])
        ]
        print(json.dumps(out, ensure_ascii=False))
    return 0


def _compare_text(args, reference, models, text_name, text) -> dict:
    from qdesk.core.compare.divergence import DivergenceDone, divergence_steps
    from qdesk.core.compare.report_text import divergence_text
    from qdesk.core.compare.texts import encode_text

    ids, bos = encode_text(reference.backend.tokenizer, text)
    steps = divergence_steps(
        reference.backend, [m.backend for m in models], ids, ctx=args.ctx, chunks=args.chunks,
        bos_id=bos,
    )
    done = None
    for ev in steps:
        if isinstance(ev, DivergenceDone):
            done = ev
        else:
            _progress(f"window {ev.index + 1}/{ev.total} ({ev.seconds:.0f} s)",
                      ev.index + 1 == ev.total)
    if not args.json:
        for r in done.reports:
            print(divergence_text(r) + "\n")
    return {"text": text_name, "text_tokens": len(ids), "bos_per_window": bos is not None,
            **done.to_json()}


def _prompt_sampling(args):
    from qdesk.core.chat.events import SamplingConfig

    try:
        return SamplingConfig(
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
            max_new_tokens=args.max_new_tokens,
        )
    except ValueError as e:
        raise BadInput(str(e)) from None


def _compare_prompts(args, reference, models, set_name, prompts) -> dict:
    from qdesk.core.compare.replies import LengthsDone, reply_length_steps
    from qdesk.core.compare.report_text import lengths_text

    sampling = _prompt_sampling(args)
    done = None
    backends = [reference.backend, *[m.backend for m in models]]
    for ev in reply_length_steps(backends, prompts, sampling, args.samples, set_name):
        if isinstance(ev, LengthsDone):
            done = ev
        else:
            _progress(f"reply {ev.done}/{ev.total}", ev.done == ev.total)
    if not args.json:
        print(lengths_text(done))
    return done.to_json()
