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
    """The token bookkeeping both backends share: which ids the cache holds."""

    def __init__(self) -> None:
        self.tokens: list[int] = []

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def _crop(self, n: int) -> None:
        raise NotImplementedError

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        common = min(common_prefix(self.tokens, ids), len(ids) - 1)  # feed at least one token
        if common < len(self.tokens):
            self._crop(common)
            del self.tokens[common:]
        return self.feed(ids[common:])

    def feed(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        logits = self._forward(ids)
        self.tokens.extend(ids)
        return logits

    def reset(self) -> None:
        self._crop(0)
        self.tokens.clear()
