"""A conversation run on N models at once: same prompt, sampling setup and seed.

The first model is the reference. Each model keeps its own history (its own
replies) in one ``Transcript``. Every action is planned first (``start_*``:
checks, then the transcript gets the new branches) and then run (``run``),
which interleaves the panes one token at a time, so panes grow together and a
consumer (the GUI, the comparison engine) sees them in step. A set cancel
event ends every pane at its next token.

Actions: ``send`` (a new turn), ``regenerate`` (the last turn again, as new
branches), ``branch`` (one pane's last reply continued from another token at
position i). A pane whose model fails, or is ``detach``-ed (unloaded) while
it runs, ends with ``PaneFailed``; the other panes go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from qdesk.core.chat.backends import LogitsBackend
from qdesk.core.chat.events import Conversation, ReplyDone, SamplingConfig, TokenEvent
from qdesk.core.chat.generate import check_prompt_fits, generate_steps
from qdesk.core.chat.transcript import Branch, PaneTurn, Transcript, Turn
from qdesk.core.errors import BadInput, QdeskError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaneToken:
    pane: int
    event: TokenEvent


@dataclass(frozen=True)
class PaneDone:
    pane: int
    reply: ReplyDone
    prompt_ids: tuple[int, ...]


@dataclass(frozen=True)
class PaneFailed:
    """Pane ``pane`` stopped: its model failed or was unloaded (``message`` says which)."""

    pane: int
    message: str


SessionEvent = PaneToken | PaneDone | PaneFailed


@dataclass(frozen=True)
class PaneJob:
    """One pane's part of an action: where its tokens go and how they start."""

    pane: int
    prompt_ids: tuple[int, ...]
    branch: Branch  # in the transcript already; run() fills it
    sampling: SamplingConfig
    prefix: tuple[int, ...] = ()  # reply tokens kept from the parent branch
    force: int | None = None  # the token taken at position len(prefix)


def error_message(e: BaseException) -> str:
    return str(e) if isinstance(e, QdeskError) else f"{type(e).__name__}: {e}"


class ChatSession:
    def __init__(
        self,
        backends: Sequence[LogitsBackend],
        sampling: SamplingConfig | None = None,
        system: str | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        if not backends:
            raise BadInput("a chat needs at least one model")
        if len({id(b) for b in backends}) != len(backends):
            # Panes step in turn on their own KV caches; one cache cannot hold two replies.
            raise BadInput("the same loaded model is given twice; load it once per pane")
        if transcript is not None and transcript.n_panes != len(backends):
            raise BadInput(
                f"the conversation has {transcript.n_panes} panes and {len(backends)} models are given"
            )
        self.backends = list(backends)
        self.sampling = sampling or SamplingConfig()
        self.transcript = transcript or Transcript(len(self.backends), system)
        self.detached: dict[int, str] = {}  # pane -> why its model is gone

    @property
    def reference(self) -> LogitsBackend:
        return self.backends[0]

    @property
    def conversations(self) -> list[Conversation]:
        return [self.transcript.conversation(i) for i in range(len(self.backends))]

    @property
    def system(self) -> str | None:
        return self.transcript.system

    @system.setter
    def system(self, text: str | None) -> None:
        self.transcript.system = text or None

    def prompt_ids(self, pane: int, prompt: str, upto: int | None = None) -> list[int]:
        conv = Conversation(self.transcript.system, self.transcript.history(pane, upto))
        messages = conv.messages() + [{"role": "user", "content": prompt}]
        return self.backends[pane].tokenizer.encode_chat(messages)

    # -- planning: checks first, then the transcript gets the new branches --

    def start_turn(self, prompt: str) -> list[PaneJob]:
        if not prompt.strip():
            raise BadInput("the prompt is empty")
        live = self._live_panes()
        prompts = {i: self.prompt_ids(i, prompt) for i in live}
        for i, ids in prompts.items():
            check_prompt_fits(self.backends[i], ids)  # refuse before any model starts
        turn = Turn(prompt, [PaneTurn() for _ in self.backends])
        jobs = []
        for i, pt in enumerate(turn.panes):
            branch = Branch(seed=self.sampling.seed, prompt_ids=tuple(prompts.get(i, ())))
            if i not in prompts:
                branch.error = self.detached[i]
            pt.branches.append(branch)
            if i in prompts:
                jobs.append(PaneJob(i, branch.prompt_ids, branch, self.sampling))
        self.transcript.turns.append(turn)
        return jobs

    def start_regenerate(self) -> list[PaneJob]:
        """The last turn again on every pane, each as a new root branch with
        the next seed (greedy replies come out the same)."""
        turn = self._last_turn()
        jobs = []
        for i in self._live_panes():
            pt = turn.panes[i]
            roots = sum(b.parent is None for b in pt.branches)
            first = pt.branches[0]
            ids = first.prompt_ids or tuple(self.prompt_ids(i, turn.prompt, len(self.transcript.turns) - 1))
            sampling = replace(self.sampling, seed=self.sampling.seed + roots)
            branch = Branch(kind="regenerated", seed=sampling.seed, prompt_ids=tuple(ids))
            pt.branches.append(branch)
            pt.active = len(pt.branches) - 1
            jobs.append(PaneJob(i, branch.prompt_ids, branch, sampling))
        if not jobs:
            raise BadInput("no pane has a model to regenerate with")
        return jobs

    def start_branch(self, pane: int, index: int, token: int, kind: str = "alternative") -> PaneJob:
        """Pane ``pane``'s shown reply to the last turn, continued from
        ``token`` at position ``index`` (its tokens before it kept)."""
        turn = self._last_turn()
        if not 0 <= pane < len(self.backends):
            raise BadInput(f"there is no pane {pane}")
        if pane in self.detached:
            raise BadInput(f"pane {pane + 1} has no model: {self.detached[pane]}")
        pt = turn.panes[pane]
        parent = pt.current
        if not parent.finished:
            raise BadInput("this reply is still being written")
        if not 0 <= index < len(parent.tokens):
            raise BadInput(f"the reply has {len(parent.tokens)} tokens; there is no token {index}")
        if parent.tokens[index].token_id == token:
            raise BadInput("that token is the one the reply already has there")
        branch = parent.departing(kind, index, pt.active)
        sampling = replace(self.sampling, seed=parent.seed)
        pt.branches.append(branch)
        pt.active = len(pt.branches) - 1
        prefix = tuple(t.token_id for t in branch.tokens)
        return PaneJob(pane, branch.prompt_ids, branch, sampling, prefix, int(token))

    def select_branch(self, pane: int, branch: int, turn: int = -1) -> None:
        pt = self.transcript.turns[turn].panes[pane]
        if not 0 <= branch < len(pt.branches):
            raise BadInput(f"pane {pane + 1} has {len(pt.branches)} versions of this reply")
        pt.active = branch

    def new_chat(self) -> None:
        self.transcript.turns.clear()

    def detach(self, pane: int, reason: str) -> None:
        """The pane's model is gone (unloaded); a running reply ends at its
        next token with ``reason``. Safe to call from another thread."""
        self.detached[pane] = reason

    def _live_panes(self) -> list[int]:
        live = [i for i in range(len(self.backends)) if i not in self.detached]
        if not live:
            raise BadInput("no pane has a model")
        return live

    def _last_turn(self) -> Turn:
        turn = self.transcript.last
        if turn is None:
            raise BadInput("nothing has been said yet")
        return turn

    # -- running --

    def send(self, prompt: str, cancel: threading.Event | None = None) -> Iterator[SessionEvent]:
        """Run ``prompt`` on every model; yield their tokens interleaved."""
        yield from self.run(self.start_turn(prompt), cancel)

    def regenerate(self, cancel: threading.Event | None = None) -> Iterator[SessionEvent]:
        yield from self.run(self.start_regenerate(), cancel)

    def branch(
        self, pane: int, index: int, token: int, cancel: threading.Event | None = None
    ) -> Iterator[SessionEvent]:
        yield from self.run([self.start_branch(pane, index, token)], cancel)

    def run(self, jobs: Sequence[PaneJob], cancel: threading.Event | None = None) -> Iterator[SessionEvent]:
        """Run the planned jobs, one token per pane in turn."""
        streams = {}
        for job in jobs:
            streams[job.pane] = generate_steps(
                self.backends[job.pane], job.prompt_ids, job.sampling, cancel,
                prefix=job.prefix, force=job.force,
            )
        branches = {job.pane: job.branch for job in jobs}
        while streams:
            for pane in list(streams):
                branch = branches[pane]
                if pane in self.detached:
                    streams.pop(pane).close()
                    branch.error = self.detached[pane]
                    yield PaneFailed(pane, branch.error)
                    continue
                try:
                    event = next(streams[pane])
                except Exception as e:  # this pane stops; the others go on
                    del streams[pane]
                    log.warning("pane %d failed", pane, exc_info=True)
                    branch.error = self.detached.get(pane) or error_message(e)
                    yield PaneFailed(pane, branch.error)
                    continue
                if isinstance(event, ReplyDone):
                    del streams[pane]
                    branch.reply = event
                    yield PaneDone(pane, event, tuple(branch.prompt_ids))
                else:
                    branch.tokens.append(event)
                    yield PaneToken(pane, event)
