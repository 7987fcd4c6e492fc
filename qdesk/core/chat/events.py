"""The typed, frozen values a chat produces and consumes.

A generation is a stream of ``TokenEvent``s followed by one ``ReplyDone``. The
GUI, the CLI's ``--json`` and the comparison engine all read these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qdesk.core.errors import BadInput


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. temperature 0 means greedy.

    top_k 0 and top_p 1.0 switch those filters off; repetition_penalty 1.0 too.
    stop: strings that end the reply (not included in it).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    stats_top_k: int = 5

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0):
            raise BadInput(f"temperature must be >= 0, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise BadInput(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise BadInput(f"top-k must be >= 0, got {self.top_k}")
        if not (self.repetition_penalty > 0.0):
            raise BadInput(f"repetition penalty must be > 0, got {self.repetition_penalty}")
        if self.max_new_tokens < 1:
            raise BadInput(f"max new tokens must be >= 1, got {self.max_new_tokens}")
        if not 1 <= self.stats_top_k <= 100:
            raise BadInput(f"statistics top-k must be in 1..100, got {self.stats_top_k}")
        if any(not s for s in self.stop):
            raise BadInput("a stop string is empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token and what the model thought of it.

    top_ids/top_probs: the model's top-k at temperature 1 (raw logits), sorted by
    probability, descending. margin = p1 - p2 and entropy (nats) come from the
    same distribution; p_token is the chosen token's probability there.
    p_sampled: its probability under the distribution actually sampled from
    (temperature, top-k, top-p, repetition penalty); 1.0 when greedy.
    text: the reply text this token completes; pieces concatenate to the reply
    (a piece is empty while a multi-byte character is incomplete, and for the
    end-of-turn token).
    """

    index: int
    token_id: int
    text: str
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    margin: float
    entropy: float
    p_token: float
    p_sampled: float
    is_end: bool = False

    def to_json(self) -> dict:
        return {
            "id": self.token_id,
            "text": self.text,
            "top": [[i, p] for i, p in zip(self.top_ids, self.top_probs)],
            "margin": self.margin,
            "entropy": self.entropy,
            "p_token": self.p_token,
            "p_sampled": self.p_sampled,
        }


FINISH_REASONS = ("end", "length", "stop", "cancelled")


@dataclass(frozen=True)
class ReplyDone:
    """The end of one reply.

    finish_reason: "end" (end-of-turn token), "length" (max new tokens or the
    context), "stop" (a stop string), "cancelled".
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str
    prompt_tokens: int
    seconds: float
    first_token_seconds: float
    decode_tokens_per_second: float

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass
class Conversation:
    """A system prompt and the turns so far (mutable: the session appends)."""

    system: str | None = None
    turns: list[Message] = field(default_factory=list)

    def messages(self) -> list[dict]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        out += [{"role": m.role, "content": m.content} for m in self.turns]
        return out
