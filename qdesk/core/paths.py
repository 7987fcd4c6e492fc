"""Where qdesk keeps its own files (the materialized demo model, caches)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def data_dir() -> Path:
    """The user data folder; ``QDESK_DATA_DIR`` overrides the platform default."""
    override = os.environ.get("QDESK_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("qdesk", appauthor=False))


def resources_dir() -> Path:
    """The repository's ``resources/`` folder (prompt, calibration and text sets)."""
    return Path(__file__).resolve().parents[2] / "resources"


def read_json_cache(name: str) -> dict:
    """A small JSON table kept in the data folder (measurements, probe verdicts);
    absent or damaged reads as empty: every such cache only saves re-measuring."""
    try:
        data = json.loads((data_dir() / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_cache(name: str, cache: dict) -> None:
    """Replace the table atomically; a read-only data folder only costs a
    re-measurement next time."""
    from qdesk.core.atomic import write_text_atomic

    try:
        write_text_atomic(data_dir() / name, json.dumps(cache, indent=1))
    except OSError as e:
        log.info("cannot keep %s: %s", name, e)
