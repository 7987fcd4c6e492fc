"""What a multi-pane chat has said so far: turns, and per pane the versions
(branches) of each reply with every token's statistics.

Plain data, filled by ``ChatSession`` (tokens, replies) and by the comparison
engine (agreement with the reference); saved and loaded by
``qdesk.core.compare.conversation_io``. A pane's history for the next turn is
the active branch of every earlier turn.

Branches of a turn form a tree: a root branch answers the prompt (the first
reply, or a Regenerate); any other departs from its ``parent`` at token
``point``, keeping the parent's tokens before it (with their statistics) and
taking another token there ("alternative": the user's pick; "follow": the
reference's top-1 at a flip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qdesk.core.chat.events import Conversation, Message, ReplyDone, TokenEvent

BRANCH_KINDS = ("reply", "regenerated", "alternative", "follow")


@dataclass
class Branch:
    """One version of one pane's reply.

    tokens, agreements, ref_top: one entry per token. agreements[i] is the
    comparison engine's ``Agreement`` (None for the reference and panes
    compared with nothing); ref_top[i] is the reference's ``DistributionStats``
    on this pane's prefix (top-k, margin, entropy), or None likewise.
    summary: the ``ReplyAgreement`` of the whole reply; reverse: the
    ``DivergenceReport`` of the reference's reply under this pane's model.
    error: why the reply stopped early (the model failed or was unloaded).
    """

    kind: str = "reply"
    parent: int | None = None
    point: int = 0
    seed: int = 0
    prompt_ids: tuple[int, ...] = ()
    tokens: list[TokenEvent] = field(default_factory=list)
    agreements: list = field(default_factory=list)
    ref_top: list = field(default_factory=list)
    reply: ReplyDone | None = None
    summary: object | None = None
    reverse: object | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return self.reply.text if self.reply is not None else "".join(t.text for t in self.tokens)

    @property
    def token_ids(self) -> list[int]:
        return [t.token_id for t in self.tokens]

    @property
    def finished(self) -> bool:
        return self.reply is not None or self.error is not None

    def departing(self, kind: str, point: int, parent: int) -> Branch:
        """A new branch that keeps this one's tokens before ``point``."""
        return Branch(
            kind=kind, parent=parent, point=point, seed=self.seed, prompt_ids=self.prompt_ids,
            tokens=self.tokens[:point], agreements=self.agreements[:point],
            ref_top=self.ref_top[:point],
        )


@dataclass
class PaneTurn:
    """One pane's replies to one turn; ``active`` is the one shown and continued."""

    branches: list[Branch] = field(default_factory=list)
    active: int = 0

    @property
    def current(self) -> Branch:
        return self.branches[self.active]


@dataclass
class Turn:
    prompt: str
    panes: list[PaneTurn]


@dataclass
class Transcript:
    """The conversation of ``n_panes`` panes (pane 0 the reference)."""

    n_panes: int
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def history(self, pane: int, upto: int | None = None) -> list[Message]:
        """The turns before ``upto`` (all by default) as one pane saw them."""
        out: list[Message] = []
        for turn in self.turns[:upto]:
            out.append(Message("user", turn.prompt))
            out.append(Message("assistant", turn.panes[pane].current.text))
        return out

    def conversation(self, pane: int) -> Conversation:
        return Conversation(system=self.system, turns=self.history(pane))

    @property
    def last(self) -> Turn | None:
        return self.turns[-1] if self.turns else None
