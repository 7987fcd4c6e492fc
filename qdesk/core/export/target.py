"""Where an export goes: refused if it exists, unless ``force`` and it is
verifiably a previous qdesk export of the same kind; written under a temporary
name beside it and renamed at the end, so a cancelled or failed export leaves
nothing and a replaced one is never half old, half new.

A qdesk GGUF carries the metadata key ``qdesk.export.format``; a qdesk
safetensors folder carries ``qdesk_export.json`` naming its format. Nothing
else is ever replaced: a user's own file, a qdesk checkpoint (that is work, not
an export) or a folder of other files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qdesk.core.atomic import check_manifest, file_manifest, publish, remove, replace_verified
from qdesk.core.atomic import partial_name as atomic_partial_name
from qdesk.core.errors import BadInput

__all__ = ["check_target", "commit", "partial_name", "previous_export_kind", "remove",
           "verify_replaceable", "write_folder_marker"]

GGUF_MARKER = "qdesk.export.format"
FOLDER_MARKER = "qdesk_export.json"


def previous_export_kind(path: Path) -> str | None:
    """The format of the qdesk export at ``path``, or None if it is not one."""
    path = Path(path)
    if path.is_file():
        return _gguf_marker(path)
    marker = path / FOLDER_MARKER
    if path.is_dir() and marker.is_file():
        try:
            value = json.loads(marker.read_text(encoding="utf-8"))
            return str(value["format"]) if isinstance(value, dict) else None
        except (OSError, UnicodeDecodeError, ValueError, KeyError):
            return None
    return None


def _gguf_marker(path: Path) -> str | None:
    from qdesk.core.models.gguf_reader import read_gguf

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
        entry = read_gguf(path).metadata.get(GGUF_MARKER)
    except Exception:  # an unreadable file is simply not a qdesk export
        return None
    return entry.data if entry is not None and isinstance(entry.data, str) else None


def check_target(path: Path, kind: str, force: bool, folder: bool) -> None:
    """Refuse ``path`` unless it is free, or ``force`` and a qdesk ``kind`` export."""
    path = Path(path)
    if not path.parent.is_dir():
        what = "not a folder" if path.parent.exists() else "no such folder"
        raise BadInput(f"{path.parent}: {what}")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{os.fsencode(path)!r}: the output name is not valid UTF-8") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BadInput(f"{path.parent}: not writable (permission denied)")
    if not path.exists() and not path.is_symlink():
        return
    if folder and path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        if force:
            return
        raise BadInput(f"{path} exists (an empty folder; pass --force to write there)")
    if not force:
        raise BadInput(f"{path} exists (pass --force to replace a previous qdesk {kind} export)")
    verify_replaceable(path, kind, folder)


def verify_replaceable(path: Path, kind: str, folder: bool) -> None:
    """BadInput unless ``path`` is a qdesk ``kind`` export holding only what
    qdesk wrote (a folder's files are checked against its marker's manifest)."""
    if path.is_symlink() or folder != path.is_dir():
        raise BadInput(f"{path} exists and is not a qdesk {kind} export: qdesk will not replace it")
    if folder and not any(path.iterdir()):
        return
    found = previous_export_kind(path)
    if found != kind:
        what = "not a qdesk export" if found is None else f"a qdesk {found} export, not {kind}"
        raise BadInput(f"{path} exists and is {what}: qdesk will not replace it")
    if folder:
        check_manifest(path, FOLDER_MARKER, f"{kind} export")


def partial_name(path: Path) -> Path:
    """The temporary sibling an export is written to (hidden, names the process)."""
    return atomic_partial_name(path)


def commit(tmp: Path, path: Path, kind: str, force: bool) -> None:
    """Put ``tmp`` (file or folder) at ``path``: only if nothing is there, or
    (``force``) in place of a verified qdesk ``kind`` export, checked again
    right before and after the swap."""
    tmp, path = Path(tmp), Path(path)
    folder = tmp.is_dir()
    try:
        if force:
            replace_verified(tmp, path, lambda p: verify_replaceable(p, kind, folder))
        else:
            publish(tmp, path)
    except FileExistsError:
        raise BadInput(f"{path} appeared while the export was being written (another program "
                       "or qdesk run?); it was left as it is and nothing was written") from None


def write_folder_marker(folder: Path, format_name: str, details: dict) -> None:
    files = file_manifest(Path(folder), FOLDER_MARKER)  # makes the folder verifiably qdesk's
    (Path(folder) / FOLDER_MARKER).write_text(json.dumps(
        {"format": format_name, **details, "files": files}, indent=2, default=str), encoding="utf-8")
