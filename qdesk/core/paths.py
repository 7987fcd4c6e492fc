"""Where qdesk keeps its own files (the materialized demo model, caches)."""

from __future__ import annotations

import os
from pathlib import Path


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
