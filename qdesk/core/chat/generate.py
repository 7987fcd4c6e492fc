"""One reply as a stream of ``TokenEvent``s, on any ``LogitsBackend``.

Each step: the model's distribution at temperature 1 gives the statistics
(top-k, margin, entropy); the sampling setup picks the token; the detokenizer
turns it into text. The yield is the cancel point: a set ``cancel`` event ends
the reply at the token being produced.

A branch continues a reply from one of its tokens: ``prefix`` holds the reply
tokens kept from the reply it departs from (fed after the prompt, not yielded
again) and ``force`` the token taken at the first new position instead of a
sampled one, e.g. the reference's choice at a flip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from qdesk.core.chat.backends import LogitsBackend
from qdesk.core.chat.events import ReplyDone, SamplingConfig, TokenEvent
from qdesk.core.chat.stats import (
    apply_repetition_penalty,
    sampling_distribution,
    token_distribution,
)
from qdesk.core.errors import BadInput


def check_prompt_fits(backend: LogitsBackend, prompt_ids: Sequence[int]) -> None:
    if not prompt_ids:
        raise BadInput("the prompt is empty")
    if len(prompt_ids) >= backend.n_ctx:
        raise BadInput(
            f"the prompt has {len(prompt_ids)} tokens; {backend.name} holds at most "
            f"{backend.n_ctx} (its context), leaving no room for a reply"
        )


def choose_token(
    logits: np.ndarray, sampling: SamplingConfig, rng: np.random.Generator, history: np.ndarray
) -> tuple[int, float]:
    """(token id, its probability under the sampling distribution)."""
    z = apply_repetition_penalty(logits, history, sampling.repetition_penalty)
    if sampling.greedy:
        return int(np.argmax(z)), 1.0
    dist = sampling_distribution(z, sampling.temperature, sampling.top_k, sampling.top_p)
    cdf = np.cumsum(dist)
    token = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    token = min(token, dist.shape[0] - 1)
    while dist[token] == 0.0:  # a draw on a flat stretch of the CDF: step back
        token -= 1
    return token, float(dist[token])


def forced_probability(
    logits: np.ndarray, sampling: SamplingConfig, history: np.ndarray, token: int
) -> float:
    """A token's probability under the distribution the sampler would draw
    from (greedy: 1 for the argmax, else 0), for a token chosen by the user."""
    z = apply_repetition_penalty(logits, history, sampling.repetition_penalty)
    if sampling.greedy:
        return 1.0 if int(np.argmax(z)) == token else 0.0
    dist = sampling_distribution(z, sampling.temperature, sampling.top_k, sampling.top_p)
    return float(dist[token])


class StopStringFilter:
    """Holds back text that could begin a stop string, so pieces stay exact."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.pending = ""

    def push(self, piece: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was completed)."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        cut = len(self.pending) - keep
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def generate_steps(
    backend: LogitsBackend,
    prompt_ids: Sequence[int],
    sampling: SamplingConfig,
    cancel: threading.Event | None = None,
    prefix: Sequence[int] = (),
    force: int | None = None,
) -> Iterator[TokenEvent | ReplyDone]:
    """Yield one ``TokenEvent`` per generated token, then one ``ReplyDone``.

    prefix: reply tokens already chosen (a branch keeps them from the reply it
    departs from); the first yielded index is ``len(prefix)`` and
    ``ReplyDone`` covers the whole reply, prefix included. force: the token
    taken at that first index instead of a sampled one.
    """
    prefix = [int(t) for t in prefix]
    check_prompt_fits(backend, list(prompt_ids) + prefix)
    max_new = min(sampling.max_new_tokens, backend.n_ctx - len(prompt_ids)) - len(prefix)
    if max_new < 1:
        raise BadInput(
            f"a branch at token {len(prefix)} leaves no room: the reply may have at most "
            f"{sampling.max_new_tokens} tokens (raise max new tokens)"
        )
    # A branch draws from its own stream, so the same branch gives the same reply.
    rng = np.random.default_rng([sampling.seed, len(prefix)] if prefix else sampling.seed)
    eos = backend.tokenizer.eos_ids
    detok = backend.tokenizer.detokenizer()
    stops = StopStringFilter(sampling.stop)
    texts: list[str] = []  # the reply's pieces; the kept ones were yielded before
    for token in prefix:
        texts.append(stops.push(detok.push(token))[0])
    generated: list[int] = list(prefix)
    history = np.asarray(list(prompt_ids) + prefix, dtype=np.int64)

    t_start = time.perf_counter()
    logits = backend.prefill(list(prompt_ids) + prefix)
    if force is not None and not 0 <= force < logits.shape[0]:
        raise BadInput(f"token id {force} is outside {backend.name}'s vocabulary")
    t_first = t_last = None
    finish = "length"
    for i in range(len(prefix), len(prefix) + max_new):
        stats, probs = token_distribution(logits, sampling.stats_top_k)
        if force is not None and i == len(prefix):
            token = int(force)
            p_sampled = forced_probability(logits, sampling, history, token)
        else:
            token, p_sampled = choose_token(logits, sampling, rng, history)
        generated.append(token)
        history = np.append(history, token)
        is_end = token in eos
        piece, stopped = ("", False) if is_end else stops.push(detok.push(token))
        cancelled = cancel is not None and cancel.is_set()
        if is_end:
            finish = "end"
        elif stopped:
            finish = "stop"
        elif cancelled:
            finish = "cancelled"
        last = is_end or stopped or cancelled or i == len(prefix) + max_new - 1
        if last and not stopped:
            tail, done = stops.push(detok.flush())
            piece += tail if done else tail + stops.flush()
        t_last = time.perf_counter()
        if t_first is None:
            t_first = t_last
        texts.append(piece)
        yield TokenEvent(
            index=i,
            token_id=token,
            text=piece,
            top_ids=stats.top_ids,
            top_probs=stats.top_probs,
            margin=stats.margin,
            entropy=stats.entropy,
            p_token=float(probs[token]),
            p_sampled=p_sampled,
            is_end=is_end,
        )
        if last:
            break
        logits = backend.feed([token])

    n = len(generated) - len(prefix)
    decode_tps = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else 0.0
    yield ReplyDone(
        text="".join(texts),
        token_ids=tuple(generated),
        finish_reason=finish,
        prompt_tokens=len(prompt_ids),
        seconds=(t_last or time.perf_counter()) - t_start,
        first_token_seconds=(t_first or time.perf_counter()) - t_start,
        decode_tokens_per_second=decode_tps,
    )
