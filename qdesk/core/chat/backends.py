"""Language-model backends behind one small protocol: token ids in, logits out.

Generation, statistics and sampling are written once (``generate.py``) on top
of this protocol, so the transformers and llama.cpp backends produce the same
kind of stream and the same sampler draws from both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from qdesk.core.chat.tokenizers import ChatTokenizer


class LogitsBackend(Protocol):
    name: str  # what the user calls this model
    kind: str  # "hf" or "llamacpp"
    tokenizer: ChatTokenizer
    n_ctx: int  # most tokens one sequence may hold

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Set the sequence to ``ids`` (reusing the cached common prefix) and
        return the next-token logits after it: float32, shape (vocab,)."""

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the sequence; return the next-token logits."""

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Logits after every position of ``ids`` from an empty sequence:
        float32, shape (len(ids), vocab). Leaves the cache empty."""

    def close(self) -> None: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class TokenCache:
    """The token bookkeeping both backends share: which ids the cache holds.

    The last prefill's ids and logits are kept: prefilling the same ids again
    (Regenerate) crops back to them and returns the same logits rather than
    feeding the last prompt token alone, whose different rounding would make
    a seeded sample differ from the first run's.
    """

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._prefilled: tuple[list[int], np.ndarray] | None = None

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def _crop(self, n: int) -> None:
        raise NotImplementedError

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        if self._prefilled is not None:
            last_ids, last_logits = self._prefilled
            if last_ids == ids and self.tokens[: len(ids)] == ids:
                self._truncate(len(ids))
                return last_logits.copy()
        common = min(common_prefix(self.tokens, ids), len(ids) - 1)  # feed at least one token
        self._truncate(common)
        logits = self.feed(ids[common:])
        self._prefilled = (ids, logits.copy())
        return logits

    def _truncate(self, n: int) -> None:
        if n < len(self.tokens):
            self._crop(n)
            del self.tokens[n:]
        if self._prefilled is not None and n < len(self._prefilled[0]):
            self._prefilled = None  # the cache no longer holds what those logits follow

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        logits = self._forward(ids)
        self.tokens.extend(ids)
        return logits

    def reset(self) -> None:
        self._crop(0)
        self.tokens.clear()
        self._prefilled = None
