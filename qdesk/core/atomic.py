"""Put files and folders in place so that nothing of the user's is ever lost.

Every qdesk writer (checkpoints, exports, dense copies, the demo folder, the
GGUF converter) writes under a hidden sibling name that carries its process
id (``partial_name``) and publishes it at the end with one of two steps:

- ``publish``: the rename succeeds only if nothing is at the destination
  (Linux ``renameat2(RENAME_NOREPLACE)``; elsewhere an equivalent exclusive
  step, ``os.link`` for a file, ``mkdir`` for a folder). A folder that appeared
  while the job was writing is never renamed away; two runs writing to the
  same place cannot both succeed.
- ``replace_verified``: the destination is replaced only after ``verify``
  accepted it, by swapping the two atomically (``RENAME_EXCHANGE``) where the
  OS allows; the old content is checked again before it is deleted, and kept
  under a visible name if it changed meanwhile.

A folder is verifiably qdesk's when its manifest (``file_manifest``: relative
path -> size, written by qdesk into its own JSON file) lists exactly the files
that are there: a folder the user added a file to is not replaced.

Partial names of processes that died (SIGKILL, power loss) are removed by the
next writer in the same folder (``clean_stale_partials``); only names of this
pattern whose process is not alive are touched.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# .NAME.qdesk-TAG-PID[.gguf]: only names qdesk makes (TAG: partial, work, old)
_PARTIAL = re.compile(r"^\..+\.qdesk-(?:partial|work|old)-(\d+)(?:\.gguf)?$")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def partial_name(path: Path, tag: str = "partial") -> Path:
    """The hidden sibling a writer works in: ``.NAME.qdesk-TAG-PID`` (a ``.gguf``
    suffix is kept: llama.cpp and qdesk open files by their suffix)."""
    path = Path(path)
    suffix = ".gguf" if path.suffix == ".gguf" else ""
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.qdesk-{tag}-{os.getpid()}{suffix}")


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """True when done; False when the OS or the file system lacks the call."""
    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:  # glibc before 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # e.g. some network file systems
        return False
    raise OSError(err, os.strerror(err), str(dst))


def publish(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest`` if nothing is there; else FileExistsError and
    both stay as they are."""
    tmp, dest = Path(tmp), Path(dest)
    if _renameat2(tmp, dest, RENAME_NOREPLACE):
        return
    if sys.platform == "win32":  # os.rename never replaces there
        os.rename(tmp, dest)
    elif not tmp.is_dir():
        os.link(tmp, dest)  # fails with EEXIST: the exclusive step
        os.unlink(tmp)
    else:
        os.mkdir(dest)  # claims the name; EEXIST if taken
        try:
            os.rename(tmp, dest)  # over our own empty folder; fails if anything went in
        except OSError:
            try:
                os.rmdir(dest)
            except OSError:
                pass
            raise FileExistsError(errno.EEXIST, "appeared while writing", str(dest)) from None


def replace_verified(tmp: Path, dest: Path, verify: Callable[[Path], None]) -> None:
    """Put ``tmp`` in place of ``dest``. ``verify(path)`` raises (BadInput) when
    ``path`` is not something qdesk may replace; it runs before the swap and
    again on the old content after it. If ``dest`` vanished meanwhile this is
    ``publish``."""
    tmp, dest = Path(tmp), Path(dest)
    if not dest.exists() and not dest.is_symlink():
        publish(tmp, dest)
        return
    verify(dest)
    if _renameat2(tmp, dest, RENAME_EXCHANGE):
        old = tmp  # the old content now lies under the partial name
    else:
        old = partial_name(dest, "old")
        publish(dest, old)
        try:
            publish(tmp, dest)
        except OSError:
            publish(old, dest)  # something took the name meanwhile: put the old one back
            raise
    try:
        verify(old)
    except Exception:
        kept = dest.with_name(f"{dest.name}.kept-{os.getpid()}")
        publish(old, kept)
        log.warning("%s changed while qdesk replaced it; the old content is kept as %s", dest, kept)
        return
    remove(old)


def remove(path: Path) -> None:
    """Delete a file or folder qdesk wrote (a symlink itself, never its target)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def file_manifest(folder: Path, exclude: str) -> dict[str, int]:
    """Relative posix path -> size in bytes of every entry under ``folder``
    except ``exclude``; a symlink or special file is listed with size -1, so a
    manifest qdesk wrote never matches it."""
    folder = Path(folder)
    out: dict[str, int] = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if rel == exclude:
                continue
            out[rel] = p.stat().st_size if p.is_file() and not p.is_symlink() else -1
    return out


def check_manifest(folder: Path, manifest_file: str, what: str) -> None:
    """Raise BadInput unless ``folder`` is empty, or ``manifest_file`` in it lists
    (key ``files``) exactly the files there, with their sizes."""
    from qdesk.core.errors import BadInput

    folder = Path(folder)
    refuse = f"{folder} exists and is not verifiably a qdesk {what}"
    if folder.is_symlink() or not folder.is_dir():
        raise BadInput(f"{refuse}: qdesk will not replace it")
    if not any(folder.iterdir()):
        return
    try:
        data = json.loads((folder / manifest_file).read_text(encoding="utf-8"))
        listed = data["files"]
        ok = isinstance(listed, dict) and all(
            isinstance(k, str) and type(v) is int for k, v in listed.items())
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise BadInput(f"{refuse} (its {manifest_file} lists no files): qdesk will not replace it")
    found = file_manifest(folder, manifest_file)
    if found != listed:
        other = sorted(set(found) - set(listed)) or sorted(
            k for k in set(found) | set(listed) if found.get(k) != listed.get(k))
        raise BadInput(f"{refuse}: {other[0]} is not as qdesk wrote it; "
                       "qdesk will not replace it (move it away or delete the folder yourself)")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, another user's: not ours to judge
    return True


def clean_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial names in ``folder`` left by qdesk processes that are
    no longer alive; returns what was removed. Never raises."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _PARTIAL.match(p.name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        try:
            remove(p)
            removed.append(p)
            log.info("removed %s, left by a qdesk run that ended without cleaning up", p)
        except OSError:
            pass
    return removed
