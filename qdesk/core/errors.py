"""The error types every front end maps to one clear message and an exit code.

CLI exit codes (DESIGN.md): 0 ok, 2 bad input, 3 out of resources, 130 cancelled.
The message of each error is the one line a user sees: it names the thing that
is wrong and, where there is one, what to do about it.
"""

from __future__ import annotations


class QdeskError(Exception):
    """Base of the errors that reach the user as one line."""

    exit_code = 1


class BadInput(QdeskError):
    """The user's input (a path, a file, a model, an option) cannot be used."""

    exit_code = 2


class OutOfResources(QdeskError):
    """Not enough memory or disk for what was asked."""

    exit_code = 3


class Cancelled(QdeskError):
    """The user cancelled the job."""

    exit_code = 130


def is_disk_full(e: BaseException) -> bool:
    """True for a full disk (or quota) whatever library raised it: OSError
    ENOSPC/EDQUOT, and the Rust libraries' (safetensors, tokenizers) own errors,
    which carry only the OS text ("No space left on device (os error 28)")."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    if "No space left on device" in text or "os error 28" in text or "StorageFull" in text:
        return True
    # numpy's tofile (gguf-py's writer) reports a short write without an errno:
    # "OSError: 3145728 requested and 1824192 written" -- a full disk in practice.
    import re

    return isinstance(e, OSError) and e.errno is None and bool(
        re.search(r"\d+ requested and \d+ written", text))
