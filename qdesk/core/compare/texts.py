"""Built-in held-out texts and prompt sets, user files, and plain-text tokenizing.

Held-out texts (resources/texts/heldout-*.txt) are prose written for qdesk and
never used for calibration. ``heldout`` is the English then the Chinese text.
Prompt sets (resources/prompts/<set>-<lang>.jsonl): one JSON object a line
with "prompt" and, for reasoning, "answer".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.paths import resources_dir

TEXTS = {"heldout-en": ("heldout-en",), "heldout-zh": ("heldout-zh",),
         "heldout": ("heldout-en", "heldout-zh")}
PROMPT_SETS = ("knowledge-en", "knowledge-zh", "reasoning-en", "reasoning-zh")


def load_text(spec: str) -> tuple[str, str]:
    """(name, text) of a built-in text or a UTF-8 file."""
    if spec in TEXTS:
        parts = [(resources_dir() / "texts" / f"{n}.txt").read_text("utf-8") for n in TEXTS[spec]]
        return spec, "\n\n".join(parts)
    path = Path(spec)
    if not path.is_file():
        raise BadInput(f"--text {spec}: no such file and no built-in text of that name "
                       f"(built-in: {', '.join(TEXTS)})")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--text {spec}: cannot read it as UTF-8 text ({e})") from None
    if not text.strip():
        raise BadInput(f"--text {spec}: the file is empty")
    return path.name, text


def encode_text(tokenizer, text: str) -> tuple[list[int], int | None]:
    """(token ids of plain text, the BOS id if the tokenizer puts one first).

    llama-perplexity tokenizes with the vocabulary's own special-token rule and
    then puts BOS at the start of every window when the vocabulary adds one;
    the BOS id returned here lets the caller do the same.
    """
    if hasattr(tokenizer, "hf"):  # HFChatTokenizer
        hf = tokenizer.hf
        ids = [int(i) for i in hf(text, add_special_tokens=True)["input_ids"]]
        bos = hf.bos_token_id
    elif hasattr(tokenizer, "_llm"):  # GGUFChatTokenizer
        llm = tokenizer._llm
        ids = [int(i) for i in llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)]
        bos = int(llm.token_bos())
    else:
        raise BadInput(f"cannot tokenize plain text with {type(tokenizer).__name__}")
    return ids, (bos if ids and bos is not None and ids[0] == bos else None)


@dataclass(frozen=True)
class Prompt:
    text: str
    answer: str | None = None  # reasoning sets: the final answer, compared after normalizing
    category: str = ""


def load_prompts(spec: str) -> tuple[str, tuple[Prompt, ...]]:
    """(name, prompts) of a built-in set (``knowledge``, ``reasoning`` = both
    languages, or e.g. ``reasoning-zh``), a .jsonl file, or a text file with
    one prompt a line."""
    names = [n for n in PROMPT_SETS if n == spec or n.startswith(spec + "-")]
    if names:
        out = []
        for n in names:
            lines = (resources_dir() / "prompts" / f"{n}.jsonl").read_text("utf-8").splitlines()
            out += [_prompt(json.loads(line), n) for line in lines if line.strip()]
        return spec, tuple(out)
    path = Path(spec)
    if not path.is_file():
        raise BadInput(f"--prompts {spec}: no such file and no built-in set of that name "
                       "(built-in: knowledge, reasoning, " + ", ".join(PROMPT_SETS) + ")")
    try:
        lines = [ln for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--prompts {spec}: cannot read it as UTF-8 text ({e})") from None
    if not lines:
        raise BadInput(f"--prompts {spec}: the file has no prompts")
    if path.suffix == ".jsonl":
        try:
            prompts = tuple(_prompt(json.loads(ln), path.stem) for ln in lines)
        except (ValueError, KeyError, TypeError) as e:
            raise BadInput(f"--prompts {spec}: not one JSON object with \"prompt\" a line ({e})") from None
        return path.name, prompts
    return path.name, tuple(Prompt(ln.strip(), None, path.stem) for ln in lines)


def _prompt(obj: dict, category: str) -> Prompt:
    """One prompt object; refused like chat refuses an empty prompt."""
    if not isinstance(obj, dict):
        raise TypeError(f"{json.dumps(obj)[:40]} is not an object")
    text, answer = obj["prompt"], obj.get("answer")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a prompt is empty or not a string")
    if answer is not None and not isinstance(answer, (str, int, float)):
        raise ValueError("an answer is not a string")
    return Prompt(text, None if answer is None else str(answer), category)
