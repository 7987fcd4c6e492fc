"""Tokenizers of closed models, kept for the next load of the same files.

Why: building a fast tokenizer from its ``tokenizer.json`` runs in Rust while
holding Python's GIL, 150-270 ms for the demo's 49k vocabulary on the 2-core
machine (measured: a second thread saw a 149 ms gap while ``Tokenizer.from_file``
ran), so in the app every load froze the window that long. A model reloaded from
the same files (the quantize page reloads its source after every run) takes the
tokenizer its previous load left behind; the app parses the demo's at start,
before its window opens, for the first load.

A kept tokenizer goes to one model at a time: the Rust tokenizer refuses being
reconfigured from one thread while another encodes ("Already borrowed"), so two
open models never share one.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from pathlib import Path

# Files AutoTokenizer reads besides config.json (of which only the fields that
# choose the tokenizer class count).
_TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges",
                    "chat_template", "spiece", "sentencepiece")
_CONFIG_FIELDS = ("model_type", "tokenizer_class")
_MAX_FILE_BYTES = 256 * 2**20
KEEP = 2  # spare tokenizers held at most (the newest)

_lock = threading.Lock()
_spare: dict[str, object] = {}  # files key -> tokenizer of a closed model
_key_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> its files key


def files_key(path: Path, trust_remote_code: bool) -> str | None:
    """A digest of everything the tokenizer is built from; None when a file
    cannot be read (then nothing is shared)."""
    digest = hashlib.sha256(f"remote code {trust_remote_code}".encode())
    try:
        names = sorted(p.name for p in path.iterdir()
                       if p.is_file() and p.name.startswith(_TOKENIZER_FILES))
        for name in names:
            f = path / name
            if f.stat().st_size > _MAX_FILE_BYTES:
                return None
            digest.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    digest.update(json.dumps([str(config.get(k)) for k in _CONFIG_FIELDS]).encode())
    return digest.hexdigest()


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained(path)``, or a closed model's tokenizer of the same files."""
    key = files_key(path, trust_remote_code)
    with _lock:
        tokenizer = _spare.pop(key, None) if key else None
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if key:
        with _lock:
            _key_of[tokenizer] = key
    return tokenizer


def give_back(tokenizer) -> None:
    """A model holding ``tokenizer`` was closed: keep it for the next load of its files."""
    with _lock:
        key = _key_of.pop(tokenizer, None)
        if key is None:
            return
        _spare.pop(key, None)
        _spare[key] = tokenizer
        while len(_spare) > KEEP:
            _spare.pop(next(iter(_spare)))


def prepare(path: Path) -> None:
    """Parse a folder's tokenizer now and keep it for the first load (app start)."""
    give_back(load_tokenizer(path))
