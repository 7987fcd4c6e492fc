"""Conversations on disk: JSON (everything, to load again) and Markdown (to read).

The JSON holds the messages, the sampling setup, the models, and for every
branch of every reply each token's statistics, agreement with the reference
and the reference's top-k, the reply's summary and the reverse score, so a
loaded conversation draws the same graphs without running a model.

A conversation file is untrusted input: ``load_conversation`` checks the
format, the version and every field's type and range, and any fault is one
``BadInput`` line naming the field. Writing goes to a temporary name first
(``write_text_atomic``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from qdesk.core.atomic import write_text_atomic
from qdesk.core.chat.events import ReplyDone, SamplingConfig, TokenEvent
from qdesk.core.chat.stats import DistributionStats
from qdesk.core.chat.transcript import BRANCH_KINDS, Branch, PaneTurn, Transcript, Turn
from qdesk.core.compare.agreement import Agreement, ReplyAgreement
from qdesk.core.compare.divergence import DivergenceReport, FlipBin
from qdesk.core.errors import BadInput

FORMAT = "qdesk-conversation"
VERSION = 1
MAX_BYTES = 256 * 2**20  # a long chat with top-20 statistics is a few MiB


@dataclass(frozen=True)
class SavedConversation:
    """What a conversation file holds. models: one plain dict per pane
    (name, backend, path, quantization …), pane 0 the reference."""

    transcript: Transcript
    sampling: SamplingConfig
    models: tuple[dict, ...] = ()
    extra: dict = field(default_factory=dict)


# -- writing --


def _token_json(t: TokenEvent, a: Agreement | None, top: DistributionStats | None) -> dict:
    d = {
        "index": t.index, "id": t.token_id, "text": t.text,
        "top_ids": list(t.top_ids), "top_probs": list(t.top_probs),
        "margin": t.margin, "entropy": t.entropy, "p_token": t.p_token,
        "p_sampled": t.p_sampled, "is_end": t.is_end,
    }
    if a is not None:
        d["agreement"] = dataclasses.asdict(a)
    if top is not None:
        d["ref_top"] = dataclasses.asdict(top)
    return d


def _branch_json(b: Branch) -> dict:
    return {
        "kind": b.kind, "parent": b.parent, "point": b.point, "seed": b.seed,
        "prompt_ids": list(b.prompt_ids), "error": b.error,
        "tokens": [_token_json(t, a, r) for t, a, r in zip(b.tokens, b.agreements, b.ref_top)],
        "reply": dataclasses.asdict(b.reply) if b.reply is not None else None,
        "summary": dataclasses.asdict(b.summary) if b.summary is not None else None,
        "reverse": b.reverse.to_json() if b.reverse is not None else None,
    }


def conversation_to_json(saved: SavedConversation) -> dict:
    t = saved.transcript
    return {
        "format": FORMAT, "version": VERSION,
        "system": t.system,
        "sampling": dataclasses.asdict(saved.sampling),
        "models": [dict(m) for m in saved.models],
        "panes": t.n_panes,
        "turns": [
            {"prompt": turn.prompt,
             "panes": [{"active": p.active, "branches": [_branch_json(b) for b in p.branches]}
                       for p in turn.panes]}
            for turn in t.turns
        ],
        **({"extra": saved.extra} if saved.extra else {}),
    }


def save_conversation(path: Path, saved: SavedConversation) -> None:
    text = json.dumps(conversation_to_json(saved), ensure_ascii=False, indent=1)
    write_text_atomic(Path(path), text + "\n")


# -- reading (untrusted) --


class _Reader:
    """Typed access to a parsed JSON document; every fault names its place."""

    def __init__(self, source: str) -> None:
        self.source = source

    def bad(self, where: str, what: str) -> BadInput:
        return BadInput(f"{self.source}: {where}: {what}")

    def value(self, v, tp, where: str):
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if v is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.value(v, inner, where)
        if tp is bool:
            if not isinstance(v, bool):
                raise self.bad(where, "expected true or false")
            return v
        if tp is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.bad(where, "expected a whole number")
            return v
        if tp is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.bad(where, "expected a number")
            return float(v)
        if tp is str:
            if not isinstance(v, str):
                raise self.bad(where, "expected text")
            return v
        if tp is dict:
            if not isinstance(v, dict):
                raise self.bad(where, "expected an object")
            return v
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = self.list(v, where)
            return tuple(self.value(x, args[0], f"{where}[{i}]") for i, x in enumerate(items))
        raise self.bad(where, f"cannot read a {tp}")  # a field type this reader lacks

    def list(self, v, where: str) -> list:
        if not isinstance(v, list):
            raise self.bad(where, "expected a list")
        return v

    def obj(self, v, where: str) -> dict:
        if not isinstance(v, dict):
            raise self.bad(where, "expected an object")
        return v

    def build(self, cls, v, where: str, special: dict | None = None):
        """An instance of dataclass ``cls`` from object ``v``, each field checked."""
        d = self.obj(v, where)
        hints = typing.get_type_hints(cls)
        special = special or {}
        kwargs = {}
        for f in dataclasses.fields(cls):
            at = f"{where}.{f.name}"
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise self.bad(at, "missing")
                continue
            read = special.get(f.name)
            kwargs[f.name] = read(d[f.name], at) if read else self.value(d[f.name], hints[f.name], at)
        try:
            return cls(**kwargs)
        except BadInput as e:
            raise self.bad(where, str(e)) from None
        except (TypeError, ValueError) as e:
            raise self.bad(where, f"not a valid {cls.__name__} ({e})") from None

    def probability(self, x: float, where: str) -> float:
        if not (-1e-6 <= x <= 1.0 + 1e-6):
            raise self.bad(where, f"{x} is not a probability")
        return x


def _report(r: _Reader, v, where: str) -> DivergenceReport:
    def labelled(x, at):
        d = r.obj(x, at)
        return tuple((str(k), r.value(val, float, f"{at}.{k}")) for k, val in d.items())

    def bins(x, at):
        return tuple(r.build(FlipBin, b, f"{at}[{i}]") for i, b in enumerate(r.list(x, at)))

    return r.build(DivergenceReport, v, where, {
        "kld_percentiles": labelled, "dp_percentiles": labelled, "flip_bins": bins,
    })


def _token(r: _Reader, v, where: str, index: int):
    d = r.obj(v, where)
    ids = r.value(d.get("top_ids"), tuple[int, ...], f"{where}.top_ids")
    probs = r.value(d.get("top_probs"), tuple[float, ...], f"{where}.top_probs")
    if len(ids) != len(probs) or not ids:
        raise r.bad(where, "top_ids and top_probs differ in length or are empty")
    for i, p in enumerate(probs):
        r.probability(p, f"{where}.top_probs[{i}]")
    token_id = r.value(d.get("id"), int, f"{where}.id")
    if token_id < 0 or any(i < 0 for i in ids):
        raise r.bad(where, "a token id is out of range")
    event = TokenEvent(
        index=index, token_id=token_id, text=r.value(d.get("text"), str, f"{where}.text"),
        top_ids=ids, top_probs=probs,
        margin=r.probability(r.value(d.get("margin"), float, f"{where}.margin"), f"{where}.margin"),
        entropy=r.value(d.get("entropy"), float, f"{where}.entropy"),
        p_token=r.probability(r.value(d.get("p_token"), float, f"{where}.p_token"), f"{where}.p_token"),
        p_sampled=r.probability(
            r.value(d.get("p_sampled"), float, f"{where}.p_sampled"), f"{where}.p_sampled"),
        is_end=r.value(d.get("is_end", False), bool, f"{where}.is_end"),
    )
    if d.get("index", index) != index:
        raise r.bad(f"{where}.index", f"expected {index}")
    a = d.get("agreement")
    a = None if a is None else r.build(Agreement, a, f"{where}.agreement")
    top = d.get("ref_top")
    top = None if top is None else r.build(DistributionStats, top, f"{where}.ref_top")
    return event, a, top


def _branch(r: _Reader, v, where: str, position: int) -> Branch:
    d = r.obj(v, where)
    kind = r.value(d.get("kind", "reply"), str, f"{where}.kind")
    if kind not in BRANCH_KINDS:
        raise r.bad(f"{where}.kind", f"unknown kind {kind!r}")
    parent = r.value(d.get("parent"), int | None, f"{where}.parent")
    if parent is not None and not 0 <= parent < position:
        raise r.bad(f"{where}.parent", "must name an earlier branch")
    b = Branch(
        kind=kind, parent=parent,
        point=r.value(d.get("point", 0), int, f"{where}.point"),
        seed=r.value(d.get("seed", 0), int, f"{where}.seed"),
        prompt_ids=r.value(d.get("prompt_ids", []), tuple[int, ...], f"{where}.prompt_ids"),
        error=r.value(d.get("error"), str | None, f"{where}.error"),
    )
    for i, t in enumerate(r.list(d.get("tokens", []), f"{where}.tokens")):
        event, a, top = _token(r, t, f"{where}.tokens[{i}]", i)
        b.tokens.append(event)
        b.agreements.append(a)
        b.ref_top.append(top)
    if not 0 <= b.point <= len(b.tokens):
        raise r.bad(f"{where}.point", "outside the reply")
    if d.get("reply") is not None:
        b.reply = r.build(ReplyDone, d["reply"], f"{where}.reply")
        if list(b.reply.token_ids) != b.token_ids:
            raise r.bad(f"{where}.reply.token_ids", "differ from the tokens")
    if d.get("summary") is not None:
        b.summary = r.build(ReplyAgreement, d["summary"], f"{where}.summary")
    if d.get("reverse") is not None:
        b.reverse = _report(r, d["reverse"], f"{where}.reverse")
    return b


def conversation_from_json(doc, source: str = "the conversation") -> SavedConversation:
    r = _Reader(source)
    d = r.obj(doc, "the file")
    if d.get("format") != FORMAT:
        raise BadInput(f"{source}: not a qdesk conversation (no \"format\": \"{FORMAT}\")")
    version = r.value(d.get("version"), int, "version")
    if version > VERSION or version < 1:
        raise BadInput(f"{source}: conversation format version {version}; this qdesk reads "
                       f"version {VERSION} (a newer qdesk wrote it?)")
    n = r.value(d.get("panes"), int, "panes")
    if not 1 <= n <= 16:
        raise r.bad("panes", f"{n} panes (1 to 16 are possible)")
    sampling = r.build(SamplingConfig, d.get("sampling", {}), "sampling", {
        "stop": lambda v, at: r.value(v, tuple[str, ...], at),
    })
    models = tuple(r.obj(m, f"models[{i}]") for i, m in enumerate(r.list(d.get("models", []), "models")))
    transcript = Transcript(n, r.value(d.get("system"), str | None, "system"))
    for ti, tv in enumerate(r.list(d.get("turns", []), "turns")):
        td = r.obj(tv, f"turns[{ti}]")
        panes = r.list(td.get("panes"), f"turns[{ti}].panes")
        if len(panes) != n:
            raise r.bad(f"turns[{ti}].panes", f"{len(panes)} panes, expected {n}")
        turn = Turn(r.value(td.get("prompt"), str, f"turns[{ti}].prompt"), [])
        for pi, pv in enumerate(panes):
            at = f"turns[{ti}].panes[{pi}]"
            pd = r.obj(pv, at)
            branches = r.list(pd.get("branches"), f"{at}.branches")
            if not branches:
                raise r.bad(f"{at}.branches", "empty")
            pt = PaneTurn([_branch(r, b, f"{at}.branches[{bi}]", bi) for bi, b in enumerate(branches)])
            pt.active = r.value(pd.get("active", 0), int, f"{at}.active")
            if not 0 <= pt.active < len(pt.branches):
                raise r.bad(f"{at}.active", "names no branch")
            turn.panes.append(pt)
        transcript.turns.append(turn)
    extra = d.get("extra", {})
    return SavedConversation(transcript, sampling, models, r.obj(extra, "extra"))


def load_conversation(path: Path) -> SavedConversation:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise BadInput(f"{path}: {size / 2**20:.0f} MiB is too large for a conversation")
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read it ({e})") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise BadInput(f"{path}: not JSON ({e})") from None
    return conversation_from_json(doc, str(path))


# -- Markdown --


def _model_line(i: int, m: dict) -> str:
    q = m.get("quantization") or {}
    quant = ", ".join(f"{k} {v}" for k, v in q.items() if k in ("method", "bits", "group_size"))
    bpw = m.get("bits_per_weight")
    parts = [m.get("backend", ""), quant, f"{bpw:.2f} bpw" if isinstance(bpw, (int, float)) else ""]
    facts = ", ".join(p for p in parts if p)
    role = " — reference" if i == 0 else ""
    return f"{i + 1}. **{m.get('name', f'pane {i + 1}')}**{f' ({facts})' if facts else ''}{role}"


def _stats_line(b: Branch, is_reference: bool) -> str:
    parts = []
    if b.reply is not None:
        r = b.reply
        parts.append(f"{len(b.tokens)} tokens ({r.finish_reason})")
        if r.decode_tokens_per_second > 0:
            parts.append(f"{r.decode_tokens_per_second:.1f} tokens/s")
        parts.append(f"first token {r.first_token_seconds:.2f} s")
    if b.error:
        parts.append(f"stopped: {b.error}")
    s = b.summary
    if s is not None and not is_reference:
        parts.append(f"{s.flips} flips ({100 * s.flip_rate:.1f}%)")
        parts.append(f"mean KLD {s.mean_kld:.4f}")
        parts.append("paths never part" if s.first_divergence is None
                     else f"paths part at token {s.first_divergence}")
    return " · ".join(parts)


def _branch_note(pt: PaneTurn) -> str:
    if len(pt.branches) < 2:
        return ""
    b = pt.current
    how = {
        "reply": "the first reply", "regenerated": "regenerated",
        "alternative": f"continued from another token at token {b.point}",
        "follow": f"follows the reference at token {b.point}",
    }[b.kind]
    return f"*Version {pt.active + 1} of {len(pt.branches)}: {how}.*"


def conversation_markdown(saved: SavedConversation) -> str:
    t, s = saved.transcript, saved.sampling
    names = [m.get("name", f"pane {i + 1}") for i, m in enumerate(saved.models)]
    names += [f"pane {i + 1}" for i in range(len(names), t.n_panes)]
    lines = ["# qdesk conversation", ""]
    if saved.models:
        lines += ["Models:", ""] + [_model_line(i, m) for i, m in enumerate(saved.models)] + [""]
    lines.append(
        f"Sampling: temperature {s.temperature:g}, top-p {s.top_p:g}, top-k {s.top_k}, "
        f"repetition penalty {s.repetition_penalty:g}, seed {s.seed}, "
        f"at most {s.max_new_tokens} new tokens."
    )
    if t.system:
        lines += ["", f"System prompt: {t.system}"]
    for ti, turn in enumerate(t.turns, start=1):
        lines += ["", f"## Turn {ti}", "", f"**User:** {turn.prompt}"]
        for pi, pt in enumerate(turn.panes):
            b = pt.current
            head = f"### {names[pi]}" + (" (reference)" if pi == 0 and t.n_panes > 1 else "")
            lines += ["", head, "", b.text.strip() or "*(no reply)*", ""]
            stats = _stats_line(b, pi == 0)
            if stats:
                lines.append(f"*{stats}*")
            note = _branch_note(pt)
            if note:
                lines.append(note)
    return "\n".join(lines) + "\n"


def export_markdown(path: Path, saved: SavedConversation) -> None:
    write_text_atomic(Path(path), conversation_markdown(saved))

