"""Chat tokenizers: the prompt as token ids, and replies back as text.

Every backend is fed token ids, never text, so two models that share a
vocabulary see exactly the same prompt tokens. ``HFChatTokenizer`` wraps a
transformers tokenizer; ``GGUFChatTokenizer`` uses llama.cpp's vocabulary and
the chat template stored in the GGUF metadata.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Sequence
from typing import Protocol

from qdesk.core.errors import BadInput


class IncrementalDetokenizer(Protocol):
    def push(self, token_id: int) -> str:
        """The new text this token completes ('' while a character is incomplete)."""

    def flush(self) -> str:
        """Text held back at the end of the reply (an incomplete character)."""


class ChatTokenizer(Protocol):
    eos_ids: frozenset[int]
    vocab_size: int

    def encode_chat(self, messages: list[dict]) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def detokenizer(self) -> IncrementalDetokenizer: ...

    def piece(self, token_id: int) -> str:
        """A readable form of one token, for plots and tables."""

    def fingerprint(self) -> str:
        """Equal for tokenizers with the same vocabulary and ids."""


def render_chat_template(template: str, messages: list[dict], **special: str) -> str:
    """Render a chat template from an untrusted file in a sandbox."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, **special
        )
    except TemplateError as e:
        raise BadInput(f"the model's chat template failed: {e}") from None


class HFIncrementalDetokenizer:
    """Decode a growing id list piece by piece with any transformers tokenizer.

    It re-decodes a short window (from the last emitted boundary) and emits the
    new suffix once it no longer ends in an incomplete character.
    """

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # ids up to here are emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before) :]
        return ""

    def flush(self) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return now[len(before) :]


class HFChatTokenizer:
    def __init__(self, tokenizer, generation_eos: Sequence[int] = ()) -> None:
        self.hf = tokenizer
        eos = set(int(i) for i in generation_eos)
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_ids = frozenset(eos)
        self.vocab_size = len(tokenizer)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        if getattr(self.hf, "chat_template", None):
            try:
                out = self.hf.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=True, return_dict=True
                )
            except Exception as e:
                raise BadInput(f"the model's chat template failed: {e}") from None
            return [int(i) for i in out["input_ids"]]
        # No template (a base model): plain text of the turns.
        text = "\n\n".join(m["content"] for m in messages) + "\n"
        return [int(i) for i in self.hf(text)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def detokenizer(self) -> HFIncrementalDetokenizer:
        return HFIncrementalDetokenizer(self.hf)

    def piece(self, token_id: int) -> str:
        return self.hf.decode([token_id], skip_special_tokens=False)

    def fingerprint(self) -> str:
        ids = self.hf(FINGERPRINT_PROBE, add_special_tokens=False)["input_ids"]
        return _fingerprint(self.vocab_size, ids)


class ByteDetokenizer:
    """Pieces from token bytes through an incremental UTF-8 decoder."""

    def __init__(self, token_bytes) -> None:
        self._bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class GGUFChatTokenizer:
    """llama.cpp's tokenizer for a GGUF file, with its chat template."""

    def __init__(self, llama, chat_template: str | None) -> None:
        self._llm = llama
        self._template = chat_template
        self.vocab_size = int(llama.n_vocab())
        self.eos_ids = frozenset({int(llama.token_eos())} | self._eot_ids())
        self._piece_cache: dict[int, bytes] = {}

    def _eot_ids(self) -> set[int]:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        eot = int(llama_cpp.llama_vocab_eot(vocab))
        return {eot} if eot >= 0 else set()

    def _token_text(self, token_id: int) -> str:
        return self._llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def encode_chat(self, messages: list[dict]) -> list[int]:
        if self._template:
            bos = self._token_text(int(self._llm.token_bos()))
            eos = self._token_text(int(self._llm.token_eos()))
            text = render_chat_template(self._template, messages, bos_token=bos, eos_token=eos)
            # Like transformers' apply_chat_template: the template writes its own
            # special tokens, so none are added around it.
            return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        text = "\n\n".join(m["content"] for m in messages) + "\n"
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def token_bytes(self, token_id: int) -> bytes:
        b = self._piece_cache.get(token_id)
        if b is None:
            b = self._llm.detokenize([token_id], special=False)
            self._piece_cache[token_id] = b
        return b

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def detokenizer(self) -> ByteDetokenizer:
        return ByteDetokenizer(self.token_bytes)

    def piece(self, token_id: int) -> str:
        return self._token_text(token_id)

    def fingerprint(self) -> str:
        ids = self._llm.tokenize(FINGERPRINT_PROBE.encode("utf-8"), add_bos=False, special=False)
        return _fingerprint(self.vocab_size, ids)


# Token representations differ between libraries (byte-level strings, raw
# bytes), so tokenizers are compared by what they do: the vocabulary size and
# the ids of a probe text in several scripts.
FINGERPRINT_PROBE = (
    "The quick brown fox jumps over the lazy dog. 1234567890 "
    "def f(x):\n    return x ** 2  # comment\n"
    "量化会改变模型的回答吗？ Ça dépend. Здравствуйте. 🙂"
)


def _fingerprint(vocab_size: int, ids) -> str:
    h = hashlib.sha256(str(vocab_size).encode())
    h.update(",".join(str(int(i)) for i in ids).encode())
    return h.hexdigest()[:16]
