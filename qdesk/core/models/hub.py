"""Hugging Face hub downloads (safetensors only), with byte progress.

Users have networks; the development and CI machines do not, so every failure
to reach the hub is one clear message rather than a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from qdesk.core.errors import BadInput

log = logging.getLogger(__name__)

# Weights as safetensors only (no pickle), plus config, tokenizer and templates.
ALLOW_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "*.json", "*.jinja", "*.txt",
    "tokenizer.model", "*.tiktoken",
]


def _progress_class(progress: Callable[[str, int, int], None] | None):
    from tqdm.auto import tqdm

    class ReportingTqdm(tqdm):
        """Forwards the aggregate byte counter to the caller's progress function.

        snapshot_download makes three bars of this class: files fetched (unit
        "it"), bytes received ("Downloading bytes", xet transfers only) and
        bytes written, which every download path updates: that one is reported.
        """

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no terminal bar; the caller shows progress
            super().__init__(*args, **kwargs)
            self.done_bytes = 0  # a disabled tqdm does not count, so count here
            self.reports = kwargs.get("unit") == "B" and "Downloading bytes" not in str(
                kwargs.get("desc", "")
            )

        def update(self, n=1):
            self.done_bytes += int(n or 0)
            if progress is not None and self.reports:
                progress("download", self.done_bytes, int(self.total or 0))
            return super().update(n)

    return ReportingTqdm


def download(
    hub_id: str, revision: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Download (or find in the local cache) a model repository; return its folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = hub_id + (f"@{revision}" if revision else "")
    try:
        folder = snapshot_download(
            hub_id,
            revision=revision,
            allow_patterns=ALLOW_PATTERNS,
            tqdm_class=_progress_class(progress),
        )
    except GatedRepoError:
        raise BadInput(f"{name}: gated on the hub; accept its licence and log in first") from None
    except RepositoryNotFoundError:
        raise BadInput(f"{name}: no such model on the Hugging Face hub") from None
    except RevisionNotFoundError:
        raise BadInput(f"{name}: no such revision on the Hugging Face hub") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, HfHubHTTPError) as e:
        raise BadInput(
            f"{name}: cannot download it (no network, or the hub is unreachable) "
            f"and it is not in the local cache [{type(e).__name__}]"
        ) from None
    return Path(folder)
