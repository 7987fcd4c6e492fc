"""Materialize a llama GGUF file as a plain Hugging Face folder (dense BF16).

The folder holds ``model.safetensors`` (BF16, transformers' tensor names),
``config.json``, ``generation_config.json`` and the tokenizer with its chat
template, so later loads are ordinary transformers loads with plain
``nn.Linear`` weights. It is written to a temporary folder beside the target
and renamed at the end: an interrupted run leaves nothing half-made.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from qdesk.core.errors import BadInput
from qdesk.core.models.gguf_dense import dense_tensors, hf_config, read_header

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def materialize_gguf(gguf_path: Path, target: Path, progress: ProgressFn | None = None) -> Path:
    """Write ``target`` as a dense HF folder made from ``gguf_path``; return target.

    If ``target`` already exists it is returned as it is (another run made it).
    """
    import torch
    from safetensors.torch import save_file

    if target.is_dir() and (target / "config.json").is_file():
        return target
    header = read_header(gguf_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        def on_tensor(done: int, total: int) -> None:
            if progress:
                progress("dequantize", done, total)

        state = {
            name: torch.from_numpy(w if w.flags.writeable else w.copy()).to(torch.bfloat16)
            for name, w in dense_tensors(header, on_tensor)
        }
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        del state
        config = hf_config(header)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        gen = {"bos_token_id": header.bos_token_id, "eos_token_id": header.eos_token_id}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        if progress:
            progress("tokenizer", 0, 1)
        _write_tokenizer(gguf_path, tmp, header.chat_template)
        if progress:
            progress("tokenizer", 1, 1)
        (tmp / "qdesk_source.json").write_text(
            json.dumps({"converted_from": str(gguf_path), "gguf_types": _type_counts(header)})
        )
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            log.info("%s was made by another run meanwhile", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_tokenizer(gguf_path: Path, out: Path, chat_template: str | None) -> None:
    # transformers converts a GGUF vocabulary (BPE or SentencePiece) into a fast
    # tokenizer; the chat template comes along from the GGUF metadata.
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as e:
        raise BadInput(f"{gguf_path}: cannot read its tokenizer ({e})") from None
    if chat_template and not getattr(tok, "chat_template", None):
        tok.chat_template = chat_template
    tok.save_pretrained(str(out))


def _type_counts(header) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in header.tensor_types.values():
        counts[t] = counts.get(t, 0) + 1
    return counts
