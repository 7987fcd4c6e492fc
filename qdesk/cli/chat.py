"""``qdesk chat``: one prompt to several models, side by side. With two or
more, the first is the reference and the others get live agreement (flips,
KL divergence, where the greedy paths part) from the comparison engine."""

from __future__ import annotations

import json
import sys

from qdesk.cli.common import (
    add_load_options,
    backends_for,
    load_options,
    note_int8_activations,
    progress_to_stderr,
)
from qdesk.core.errors import BadInput


def add_chat_parser(sub) -> None:
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
    c.add_argument("--stats-top-k", type=int, default=5, metavar="K",
                   help="alternatives kept per token in the statistics (1-100; the GUI keeps 20)")
    add_load_options(c, "auto, hf or llamacpp; one for all models or a comma list, one per model")
    c.add_argument(
        "--no-agreement", action="store_true",
        help="do not score the other models' tokens with the reference (the first model)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_chat)


def cmd_chat(args) -> int:
    from qdesk.core.chat.events import SamplingConfig
    from qdesk.core.models import open_model, resolve

    if not args.prompt.strip():
        raise BadInput("the prompt is empty")
    sampling = SamplingConfig(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, seed=args.seed,
        max_new_tokens=args.max_new_tokens, stop=tuple(args.stop or ()),
        stats_top_k=args.stats_top_k,
    )
    refs = [resolve(m) for m in args.models]  # every argument checked before any load
    backends = backends_for(args.models, args.backend)
    options = load_options(args)
    options.pop("backend")
    loaded = [
        open_model(ref, backend=b, progress=progress_to_stderr, **options)
        for ref, b in zip(refs, backends)
    ]
    note_int8_activations(args, loaded)
    panes = _run_chat(loaded, sampling, args)
    if args.json:
        out = {"replies": [pane.to_json(m) for pane, m in zip(panes, loaded)]}
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for pane, m in zip(panes, loaded):
        r = pane.reply
        int8 = ", int8 activations" if m.facts.quantization.get("int8_activations") else ""
        print(f"== {m.facts.name} [{m.facts.backend}, {m.facts.device} {m.facts.dtype}{int8}] ==")
        print(r.text)
        print(
            f"-- {r.n_tokens} tokens ({r.finish_reason}), prompt {r.prompt_tokens} tokens, "
            f"{r.decode_tokens_per_second:.1f} tokens/s"
        )
        for line in pane.agreement_lines():
            print(f"-- {line}")
        print()
    return 0


class _ChatPane:
    """What ``qdesk chat`` collects for one model."""

    def __init__(self) -> None:
        self.tokens: list = []  # TokenEvent
        self.agreements: list = []  # Agreement or None, one per token
        self.reply = None  # ReplyDone
        self.summary = None  # ReplyAgreement against the reference
        self.reverse = None  # DivergenceReport: the reference's reply under this model

    def to_json(self, model) -> dict:
        r = self.reply
        tokens = []
        for t, a in zip(self.tokens, self.agreements):
            tokens.append({**t.to_json(), **({"agreement": a.to_json()} if a else {})})
        out = {
            "model": model.facts.name, "backend": model.facts.backend, "text": r.text,
            "n_tokens": r.n_tokens, "prompt_tokens": r.prompt_tokens,
            "finish_reason": r.finish_reason,
            "seconds": r.seconds, "decode_tokens_per_second": r.decode_tokens_per_second,
            "tokens": tokens,
        }
        if self.summary is not None:
            out["agreement"] = self.summary.to_json()
        if self.reverse is not None:
            out["reference_reply_scored"] = self.reverse.to_json()
        return out

    def agreement_lines(self) -> list[str]:
        s = self.summary
        if s is None:
            return []
        first = "never" if s.first_divergence is None else f"at token {s.first_divergence}"
        lines = [
            f"against the reference: {s.flips} of {s.tokens} tokens flipped "
            f"({100 * s.flip_rate:.1f}%), mean KLD {s.mean_kld:.4f}, "
            f"mean reference margin {s.mean_margin:.3f}; the greedy paths part {first}"
        ]
        flips = [(i, t, a) for i, (t, a) in enumerate(zip(self.tokens, self.agreements))
                 if a is not None and a.flip]
        for i, t, a in flips[:5]:
            lines.append(f"flip at token {i} {t.text!r}: reference margin {a.ref_margin:.3f}, "
                         f"KLD {a.kld:.3f}")
        if self.reverse is not None:
            lines.append(f"the reference's reply under this model: mean KLD "
                         f"{self.reverse.mean_kld:.4f}, same top p "
                         f"{100 * self.reverse.same_top_p:.1f}%")
        return lines


def _run_chat(loaded, sampling, args) -> list[_ChatPane]:
    """One prompt through every model; with two or more, the first is the
    reference and every other pane gets live agreement (unless switched off)."""
    from qdesk.core.chat.session import ChatSession, PaneDone
    from qdesk.core.compare.live import (
        ComparedDone,
        ComparedSession,
        ComparedToken,
        PaneNotice,
        ReverseScored,
    )

    panes = [_ChatPane() for _ in loaded]
    backends = [m.backend for m in loaded]
    if len(loaded) < 2 or args.no_agreement:
        for event in ChatSession(backends, sampling, system=args.system).send(args.prompt):
            if isinstance(event, PaneDone):
                panes[event.pane].reply = event.reply
            else:
                panes[event.pane].tokens.append(event.event)
                panes[event.pane].agreements.append(None)
        return panes
    session = ComparedSession(backends[0], backends[1:], sampling, system=args.system)
    try:
        for event in session.send(args.prompt):
            if isinstance(event, ComparedToken):
                panes[event.pane].tokens.append(event.event)
                panes[event.pane].agreements.append(event.agreement)
            elif isinstance(event, ComparedDone):
                panes[event.pane].reply = event.reply
                panes[event.pane].summary = event.summary
            elif isinstance(event, ReverseScored):
                panes[event.pane].reverse = event.report
            elif isinstance(event, PaneNotice):
                print(f"qdesk: note: {event.message}", file=sys.stderr)
    finally:
        session.close_scorers()
    return panes
