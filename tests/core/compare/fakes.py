"""Small deterministic LogitsBackends for exact checks (no model weights)."""

from __future__ import annotations

import numpy as np

from qdesk.core.chat.backends import TokenCache


class _Tok:
    def __init__(self, vocab: int, tag: str = "v") -> None:
        self.vocab_size = vocab
        self.eos_ids = frozenset({0})
        self._tag = tag

    def fingerprint(self) -> str:
        return f"{self._tag}{self.vocab_size}"

    def encode_chat(self, messages):
        return [1] + [2 + (ord(c) % (self.vocab_size - 2)) for c in messages[-1]["content"]]

    def piece(self, i):
        return f"<{i}>"

    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)

    def detokenizer(self):
        tok = self

        class D:
            def push(self, i):
                return tok.piece(i)

            def flush(self):
                return ""

        return D()


class BigramBackend(TokenCache):
    """Next-token logits depend only on the last token: table[last] (+ noise)."""

    kind = "fake"

    def __init__(self, table: np.ndarray, name: str = "bigram", tag: str = "v") -> None:
        super().__init__()
        self.table = np.asarray(table, dtype=np.float32)
        self.name = name
        self.n_ctx = 4096
        self.tokenizer = _Tok(self.table.shape[1], tag)
        self.forward_calls = 0

    def _forward(self, ids):
        self.forward_calls += 1
        return self.table[int(ids[-1])].copy()

    def _crop(self, n):
        pass

    def score(self, ids):
        self.reset()
        return self.table[np.asarray(ids, dtype=np.int64)].copy()

    def fork(self):
        return BigramBackend(self.table, self.name, self.tokenizer._tag)

    def close(self):
        pass


def random_table(vocab: int, seed: int, scale: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, (vocab, vocab)).astype(np.float32)
