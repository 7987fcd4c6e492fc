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
import shutil
from pathlib import Path

from qdesk.core.errors import BadInput

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
    from qdesk.core.export.gguf_io import field_value

    try:
        import gguf

        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
        value = field_value(gguf.GGUFReader(str(path)), GGUF_MARKER)
    except Exception:  # an unreadable file is simply not a qdesk export
        return None
    return value if isinstance(value, str) else None


def check_target(path: Path, kind: str, force: bool, folder: bool) -> None:
    """Refuse ``path`` unless it is free, or ``force`` and a qdesk ``kind`` export."""
    path = Path(path)
    if not path.parent.is_dir():
        raise BadInput(f"{path.parent}: no such folder")
    if not path.exists() and not path.is_symlink():
        return
    if folder and path.is_dir() and not any(path.iterdir()):
        if force:
            return
        raise BadInput(f"{path} exists (an empty folder; pass --force to write there)")
    if not force:
        raise BadInput(f"{path} exists (pass --force to replace a previous qdesk {kind} export)")
    if path.is_symlink() or folder != path.is_dir():
        raise BadInput(f"{path} exists and is not a qdesk {kind} export: qdesk will not replace it")
    found = previous_export_kind(path)
    if found != kind:
        what = "not a qdesk export" if found is None else f"a qdesk {found} export, not {kind}"
        raise BadInput(f"{path} exists and is {what}: qdesk will not replace it")


def partial_name(path: Path) -> Path:
    """The temporary sibling an export is written to (hidden, names the process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.qdesk-partial-{os.getpid()}")


def commit(tmp: Path, path: Path) -> None:
    """Put ``tmp`` (file or folder) in place of ``path``; ``path`` was checked."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir() and path.exists():
        old = path.with_name(f".{path.name}.qdesk-old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def remove(path: Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_folder_marker(folder: Path, format_name: str, details: dict) -> None:
    (Path(folder) / FOLDER_MARKER).write_text(
        json.dumps({"format": format_name, **details}, indent=2, default=str), encoding="utf-8")
