"""A conversation run on N models at once: same prompt, sampling setup and seed.

The first model is the reference. Each model keeps its own history (its own
replies). ``send`` interleaves the models one token at a time, so panes grow
together and a consumer (the GUI, the comparison engine) sees them in step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from qdesk.core.chat.backends import LogitsBackend
from qdesk.core.chat.events import Conversation, Message, ReplyDone, SamplingConfig, TokenEvent
from qdesk.core.chat.generate import check_prompt_fits, generate_steps
from qdesk.core.errors import BadInput


@dataclass(frozen=True)
class PaneToken:
    pane: int
    event: TokenEvent


@dataclass(frozen=True)
class PaneDone:
    pane: int
    reply: ReplyDone
    prompt_ids: tuple[int, ...]


SessionEvent = PaneToken | PaneDone


class ChatSession:
    def __init__(
        self,
        backends: Sequence[LogitsBackend],
        sampling: SamplingConfig | None = None,
        system: str | None = None,
    ) -> None:
        if not backends:
            raise BadInput("a chat needs at least one model")
        if len({id(b) for b in backends}) != len(backends):
            # Panes step in turn on their own KV caches; one cache cannot hold two replies.
            raise BadInput("the same loaded model is given twice; load it once per pane")
        self.backends = list(backends)
        self.sampling = sampling or SamplingConfig()
        self.conversations = [Conversation(system=system) for _ in self.backends]

    @property
    def reference(self) -> LogitsBackend:
        return self.backends[0]

    def prompt_ids(self, pane: int, prompt: str) -> list[int]:
        conv = self.conversations[pane]
        messages = conv.messages() + [{"role": "user", "content": prompt}]
        return self.backends[pane].tokenizer.encode_chat(messages)

    def send(
        self, prompt: str, cancel: threading.Event | None = None
    ) -> Iterator[SessionEvent]:
        """Run ``prompt`` on every model; yield their tokens interleaved."""
        if not prompt.strip():
            raise BadInput("the prompt is empty")
        prompts = [self.prompt_ids(i, prompt) for i in range(len(self.backends))]
        for backend, ids in zip(self.backends, prompts):
            check_prompt_fits(backend, ids)  # refuse before any model starts
        streams = {
            i: generate_steps(b, prompts[i], self.sampling, cancel)
            for i, b in enumerate(self.backends)
        }
        while streams:
            for pane in list(streams):
                event = next(streams[pane])
                if isinstance(event, ReplyDone):
                    del streams[pane]
                    conv = self.conversations[pane]
                    conv.turns.append(Message("user", prompt))
                    conv.turns.append(Message("assistant", event.text))
                    yield PaneDone(pane, event, tuple(prompts[pane]))
                else:
                    yield PaneToken(pane, event)
