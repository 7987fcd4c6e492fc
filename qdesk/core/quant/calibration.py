"""Calibration samples: token windows (n, T) drawn from a text source.

Built-in sources (offline): ``general`` (English prose), ``code`` (Python source
of the installed standard library), ``chat`` (conversations in the model's chat
template), ``reasoning`` (worked problems generated with known answers), ``zh``
(Chinese prose), ``self`` (text the model generates from seed prompts) and
``mix`` (the default: general, chat, code, reasoning and zh in equal parts).
Also a user file (``.txt`` paragraphs, ``.jsonl`` with ``text`` or chat
``messages``) or ``hf:NAME[:CONFIG]`` (a Hugging Face data set; needs
``datasets`` and a network).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from qdesk.core.errors import BadInput
from qdesk.core.paths import resources_dir

log = logging.getLogger(__name__)

BUILTIN = ("mix", "general", "code", "chat", "reasoning", "zh", "self")
MIX = ("general", "chat", "code", "reasoning", "zh")


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    input_ids: torch.Tensor  # (n_samples, tokens) int64
    seed: int
    sha256: str

    @property
    def samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def describe(self) -> dict:
        return {"name": self.name, "samples": self.samples, "tokens": self.tokens,
                "seed": self.seed, "sha256": self.sha256}


def calibration_dir() -> Path:
    return resources_dir() / "calibration"


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _read_builtin(name: str) -> list[str]:
    return _paragraphs((calibration_dir() / f"{name}.txt").read_text(encoding="utf-8"))


def code_texts(rng: random.Random, need_tokens: int) -> list[str]:
    """Python source files of the installed standard library (read at run time),
    about twice the characters ``need_tokens`` takes (code runs ~3 chars a token)."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 2000)
    rng.shuffle(files)
    texts: list[str] = []
    chars = 0
    for p in files:
        if chars > 8 * need_tokens:
            break
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        chars += len(texts[-1])
    return texts


def reasoning_texts(rng: random.Random, n: int) -> list[str]:
    from qdesk.core.quant.reasoning import worked_problems

    return [p.text for p in worked_problems(rng, n)]


def chat_texts(rng: random.Random, tokenizer, n: int) -> list[str]:
    """Conversations (questions with worked answers, requests about prose) in the
    model's own chat template."""
    from qdesk.core.quant.reasoning import worked_problems

    prose = _read_builtin("general") + _read_builtin("zh")
    convs = []
    for p in worked_problems(rng, n):
        convs.append([{"role": "user", "content": p.question},
                      {"role": "assistant", "content": p.solution}])
    for para in prose:
        first, _, rest = para.partition(". ")
        convs.append([
            {"role": "user", "content": f"Please continue this text: {first}."},
            {"role": "assistant", "content": rest or para},
        ])
    rng.shuffle(convs)
    return [_apply_template(tokenizer, c) for c in convs]


def _apply_template(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def self_texts(model, tokenizer, samples: int, tokens: int, seed: int) -> list[str]:
    """Text the model writes itself from seed prompts (sampled, temperature 1)."""
    seeds = [
        "Once upon a time", "The history of", "In this tutorial, we", "def main():",
        "Dear friend,", "The main reason why", "今天", "Question: What is",
    ]
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end
    texts = []
    try:
        for start in range(0, samples, 16):
            prompts = [seeds[i % len(seeds)] for i in range(start, min(samples, start + 16))]
            batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
            out = model.generate(
                **batch, do_sample=True, temperature=1.0, max_new_tokens=tokens,
                min_new_tokens=tokens, pad_token_id=pad,
            )
            texts += tokenizer.batch_decode(out, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return texts


def file_texts(path: Path, tokenizer, chat_template: bool) -> list[str]:
    try:
        raw = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    if not raw.strip():
        raise BadInput(f"{path}: the calibration file is empty")
    if path.suffix.lower() != ".jsonl":
        texts = _paragraphs(raw)
        if chat_template:
            texts = [_apply_template(tokenizer, [{"role": "user", "content": t}]) for t in texts]
        return texts
    texts = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadInput(f"{path}:{i}: not a JSON line") from None
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            messages = row["messages"]
            if not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages
            ):
                raise BadInput(f"{path}:{i}: 'messages' must be a list of {{\"role\": ..., "
                               f"\"content\": ...}} objects with string values")
            try:
                texts.append(_apply_template(tokenizer, messages))
            except Exception as e:  # a Jinja template error on the user's messages
                raise BadInput(f"{path}:{i}: the chat template refuses these messages "
                               f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            t = row["text"]
            texts.append(
                _apply_template(tokenizer, [{"role": "user", "content": t}]) if chat_template else t
            )
        else:
            raise BadInput(f"{path}:{i}: a line needs a 'text' string or a 'messages' list")
    if not texts:
        raise BadInput(f"{path}: the calibration file is empty")
    return texts


def hub_texts(spec: str, limit: int) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise BadInput("hf: calibration sets need the 'datasets' package (pip install datasets)") from None
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
        texts = [row["text"] for _, row in zip(range(limit), ds) if row.get("text")]
    except Exception as e:
        raise BadInput(f"hf:{spec}: cannot load ({type(e).__name__}: {e})".splitlines()[0]) from None
    return texts


def _stream(texts: list[str], tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False).input_ids)
        if eos is not None:
            ids.append(int(eos))
    return ids


def _windows(stream: list[int], n: int, tokens: int, rng: random.Random, what: str) -> list[list[int]]:
    """n non-overlapping windows of ``tokens`` tokens at random aligned positions."""
    slots = len(stream) // tokens
    if slots < n:
        raise BadInput(
            f"calibration set '{what}' has {len(stream)} tokens, fewer than the "
            f"{n} x {tokens} = {n * tokens} asked (ask for fewer samples or tokens)"
        )
    return [stream[s * tokens:(s + 1) * tokens] for s in sorted(rng.sample(range(slots), n))]


def _mix_windows(tokenizer, samples: int, tokens: int, rng: random.Random) -> list[list[int]]:
    """Equal shares of the MIX sources; a share a written source (general, zh) is
    too small for goes to the generated ones (code, chat, reasoning)."""
    want = {name: samples // len(MIX) + (1 if i < samples % len(MIX) else 0)
            for i, name in enumerate(MIX)}
    streams = {name: _stream(source_texts(name, rng, tokenizer, (want[name] + 2) * tokens),
                             tokenizer) for name in ("general", "zh")}
    short = 0
    for name in ("general", "zh"):
        have = len(streams[name]) // tokens
        if have < want[name]:
            short += want[name] - have
            want[name] = have
    for i in range(short):
        want[("code", "chat", "reasoning")[i % 3]] += 1
    for name in ("code", "chat", "reasoning"):
        if want[name]:
            streams[name] = _stream(source_texts(name, rng, tokenizer, want[name] * tokens),
                                    tokenizer)
    rows: list[list[int]] = []
    for name in MIX:
        if want[name]:
            rows += _windows(streams[name], want[name], tokens, rng, name)
    rng.shuffle(rows)
    return rows


def source_texts(name: str, rng: random.Random, tokenizer, need_tokens: int) -> list[str]:
    """The texts of a built-in source; generated ones make about twice ``need_tokens``."""
    readers: dict[str, Callable[[], list[str]]] = {
        "general": lambda: _read_builtin("general"),
        "zh": lambda: _read_builtin("zh"),
        "code": lambda: code_texts(rng, need_tokens),
        "reasoning": lambda: reasoning_texts(rng, max(20, need_tokens // 35)),
        "chat": lambda: chat_texts(rng, tokenizer, max(20, need_tokens // 60)),
    }
    return readers[name]()


def check_calibration(spec: str, samples: int, tokens: int) -> None:
    """The checks ``build_calibration`` makes that need no tokenizer (counts, a
    local file's existence, encoding and lines), so they run before any model
    loads. Raises BadInput."""
    if samples < 1 or tokens < 8:
        raise BadInput(f"calibration needs at least 1 sample of 8 tokens, not {samples} x {tokens}")
    if spec == "mix" or spec in BUILTIN or spec.startswith("hf:"):
        return
    path = Path(spec).expanduser()
    if not path.is_file():
        raise BadInput(
            f"calibration '{spec}': neither a built-in set ({', '.join(BUILTIN)}), "
            "a .txt/.jsonl file nor hf:NAME"
        )
    file_texts(path, None, chat_template=False)  # no template: structure only


def build_calibration(
    spec: str,
    tokenizer,
    samples: int = 128,
    tokens: int = 512,
    seed: int = 0,
    chat_template: bool = False,
    model=None,
) -> CalibrationSet:
    """Tokenize a source and draw ``samples`` windows of ``tokens`` tokens."""
    if samples < 1 or tokens < 8:
        raise BadInput(f"calibration needs at least 1 sample of 8 tokens, not {samples} x {tokens}")
    rng = random.Random(seed)
    rows: list[list[int]] = []
    if spec == "mix":
        rows = _mix_windows(tokenizer, samples, tokens, rng)
    elif spec in BUILTIN:
        if spec == "self":
            if model is None:
                raise BadInput("the 'self' calibration set needs the model to generate text")
            texts = self_texts(model, tokenizer, samples, tokens, seed)
        else:
            texts = source_texts(spec, rng, tokenizer, samples * tokens)
        rows = _windows(_stream(texts, tokenizer), samples, tokens, rng, spec)
    elif spec.startswith("hf:"):
        rows = _windows(_stream(hub_texts(spec[3:], samples * 8), tokenizer), samples, tokens, rng, spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BadInput(
                f"calibration '{spec}': neither a built-in set ({', '.join(BUILTIN)}), "
                "a .txt/.jsonl file nor hf:NAME"
            )
        texts = file_texts(path, tokenizer, chat_template)
        rows = _windows(_stream(texts, tokenizer), samples, tokens, rng, str(path))
    ids = torch.tensor(rows, dtype=torch.int64)
    digest = hashlib.sha256(ids.numpy().tobytes()).hexdigest()
    return CalibrationSet(spec, ids, seed, digest)
