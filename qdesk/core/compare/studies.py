"""The two offline comparisons as jobs from named inputs, for the GUI (and any
front end): divergence over a text, reply lengths over a prompt set.

Each is a generator whose yields are the progress ticks and cancel points and
whose return value is the result; the result's ``to_json`` is what
``qdesk compare --json`` prints for the same inputs (less its "skipped" and
"loaded" keys, which are about loading).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from qdesk.core.chat.backends import LogitsBackend
from qdesk.core.chat.events import SamplingConfig
from qdesk.core.compare.divergence import (
    DivergenceDone,
    DivergenceReport,
    WindowScored,
    divergence_steps,
)
from qdesk.core.compare.replies import LengthsDone, ReplyGenerated, reply_length_steps
from qdesk.core.compare.texts import encode_text, load_prompts, load_text
from qdesk.core.errors import BadInput


@dataclass(frozen=True)
class TextComparison:
    text: str  # the text's name (built-in) or file name
    text_tokens: int
    bos_per_window: bool
    reports: tuple[DivergenceReport, ...]

    def to_json(self) -> dict:
        return {"text": self.text, "text_tokens": self.text_tokens,
                "bos_per_window": self.bos_per_window,
                "reports": [r.to_json() for r in self.reports]}


def text_comparison_steps(
    reference: LogitsBackend, models: Sequence[LogitsBackend], text: str, ctx: int = 512,
    chunks: int | None = None, cancel: threading.Event | None = None,
) -> Generator[WindowScored, None, TextComparison]:
    """``text``: a built-in text's name (``heldout``, ``heldout-en``,
    ``heldout-zh``) or a UTF-8 file's path."""
    if ctx < 4:
        raise BadInput(f"the context must be at least 4 tokens, got {ctx}")
    name, body = load_text(text)
    ids, bos = encode_text(reference.tokenizer, body)
    done = None
    for ev in divergence_steps(reference, models, ids, ctx=ctx, chunks=chunks, bos_id=bos,
                               cancel=cancel):
        if isinstance(ev, DivergenceDone):
            done = ev
        else:
            yield ev
    return TextComparison(name, len(ids), bos is not None, done.reports)


def length_study_steps(
    backends: Sequence[LogitsBackend], prompts: str, sampling: SamplingConfig,
    samples: int = 1, cancel: threading.Event | None = None,
) -> Generator[ReplyGenerated, None, LengthsDone]:
    """``prompts``: a built-in set (``knowledge``, ``reasoning-zh`` …) or a file."""
    name, items = load_prompts(prompts)
    done = None
    for ev in reply_length_steps(backends, items, sampling, samples, name, cancel):
        if isinstance(ev, LengthsDone):
            done = ev
        else:
            yield ev
    return done
