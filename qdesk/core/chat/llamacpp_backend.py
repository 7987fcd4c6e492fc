"""The llama.cpp backend (llama-cpp-python), reading logits by token id.

llama-cpp-python's ``top_logprobs`` are keyed by token *strings*, which merges
distinct tokens that print the same; qdesk reads the raw logits row of each
position instead. It uses two private members of ``Llama`` (``_ctx``,
``_batch``) for that, which is why the package version is pinned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qdesk.core.chat.backends import TokenCache
from qdesk.core.chat.tokenizers import GGUFChatTokenizer
from qdesk.core.errors import BadInput, OutOfResources

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 4096


def gpu_offload_available() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def decode_threads() -> int:
    """Threads for the calling stream now (qdesk.core.threads: the free cores)."""
    from qdesk.core.threads import threads_for_this_stream

    return threads_for_this_stream()


class LlamaCppBackend(TokenCache):
    kind = "llamacpp"

    def __init__(
        self, path: Path, name: str, chat_template: str | None, n_ctx: int | None = None,
        train_ctx: int | None = None,
    ) -> None:
        super().__init__()
        from llama_cpp import Llama

        n_ctx = n_ctx or min(train_ctx or DEFAULT_N_CTX, DEFAULT_N_CTX)
        threads = self._threads = decode_threads()
        try:
            self.llm = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=512,
                n_gpu_layers=-1 if gpu_offload_available() else 0,
                # resized before every forward to the cores free now (_fit_threads)
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            # The test load (gguf_probe) has read the file already, so a context that
            # cannot be made now is memory for this n_ctx, not the file.
            if "llama_context" in str(e) or "llama_batch" in str(e):
                raise OutOfResources(
                    f"{path}: llama.cpp cannot allocate a context of {n_ctx} tokens "
                    "(not enough memory; try a smaller --n-ctx)"
                ) from None
            raise BadInput(f"{path}: llama.cpp cannot load it ({e})") from None
        self.name = name
        self.n_ctx = n_ctx
        self.n_vocab = int(self.llm.n_vocab())
        self.tokenizer = GGUFChatTokenizer(self.llm, chat_template)

    def _fit_threads(self) -> None:
        """One llama.cpp context's threads follow the free cores (qdesk.core.threads);
        a change costs one call, the next graph runs with it."""
        n = decode_threads()
        if n != self._threads:
            import llama_cpp

            llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, n, n)
            self._threads = n

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        from qdesk.core.threads import compute_stream

        with compute_stream():
            self._fit_threads()
            self.llm.n_tokens = len(self.tokens)
            self.llm.eval(list(ids))
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        return row.copy()

    def _crop(self, n: int) -> None:
        self.llm.n_tokens = n  # eval() drops the KV cells past n_tokens

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """All positions' logits, batch by batch, without logits_all's n_ctx buffer."""
        from qdesk.core.threads import compute_stream

        self.reset()
        ids = [int(i) for i in ids]
        llm = self.llm
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
        for start in range(0, len(ids), llm.n_batch):
            batch = ids[start : start + llm.n_batch]
            with compute_stream():
                self._fit_threads()
                llm._batch.set_batch(batch=batch, n_past=start, logits_all=True)
                llm._ctx.decode(llm._batch)
            rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch) * self.n_vocab,))
            out[start : start + len(batch)] = rows.reshape(len(batch), self.n_vocab)
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0
        return out

    def fork(self) -> LlamaCppBackend:
        """The same file loaded again, with its own KV cache (llama.cpp contexts
        cannot share one model object through llama-cpp-python)."""
        return LlamaCppBackend(
            Path(self.llm.model_path), self.name, self.tokenizer._template, n_ctx=self.n_ctx
        )

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
