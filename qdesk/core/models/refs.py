"""Model references: the text a user typed -> what it names.

A model argument is ``demo``, a Hugging Face folder, a ``.gguf`` file, a qdesk
quantized folder, or a hub id ``ORG/NAME[@revision]``. ``resolve`` checks it
and says what it is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from qdesk.core.errors import BadInput

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass(frozen=True)
class ModelRef:
    """What a model argument names. kind: demo | hf | gguf | qdesk | hub."""

    text: str
    kind: str
    path: Path | None = None
    hub_id: str | None = None
    revision: str | None = None

    @property
    def display_name(self) -> str:
        if self.kind == "demo":
            return "demo (SmolLM2-135M-Instruct)"
        if self.kind == "hub":
            return self.hub_id + (f"@{self.revision}" if self.revision else "")
        return self.path.name if self.path else self.text


def resolve(text: str) -> ModelRef:
    """Say what a model argument names; raise BadInput if it names nothing usable."""
    text = text.strip()
    if not text:
        raise BadInput("no model given")
    if text == "demo":
        return ModelRef(text, "demo")
    path = Path(text).expanduser()
    looks_like_path = (
        path.exists() or text.startswith((".", "/", "~")) or path.suffix.lower() == ".gguf"
        or os.sep in text.rstrip(os.sep) and not HUB_ID.match(text)
    )
    if looks_like_path:
        if not path.exists():
            raise BadInput(f"{text}: no such file or folder")
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                return ModelRef(text, "gguf", path=path)
            raise BadInput(f"{text}: not a model (give a .gguf file or a model folder)")
        if (path / "qdesk.json").is_file():
            return ModelRef(text, "qdesk", path=path)
        if not (path / "config.json").is_file():
            raise BadInput(f"{text}: no config.json in this folder (not a Hugging Face model)")
        return ModelRef(text, "hf", path=path)
    if HUB_ID.match(text):
        hub_id, _, revision = text.partition("@")
        _check_hub_id(text, hub_id)
        return ModelRef(text, "hub", hub_id=hub_id, revision=revision or None)
    raise BadInput(
        f"'{text}' is not a model: give demo, a model folder, a .gguf file or a hub id ORG/NAME"
    )




def _check_hub_id(text: str, hub_id: str) -> None:
    """huggingface-hub's own rule for repo ids (characters, no leading or
    trailing '-' or '.', at most 96), checked here so a bad id is one line."""
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:
        return
    try:
        validate_repo_id(hub_id)
    except HFValidationError:
        raise BadInput(f"'{text[:120]}' is not a valid hub id: ORG/NAME of letters, digits, "
                       "'-', '_' and '.', not starting or ending with '-' or '.', at most 96 "
                       "characters") from None
