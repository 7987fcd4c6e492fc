"""What the app remembers between runs (QSettings, an INI file per user).

``QDESK_SETTINGS_DIR`` puts the file somewhere else (tests use a temporary
folder). Values are read defensively: a damaged or foreign value falls back to
the default instead of failing the start.
"""

from __future__ import annotations

import json
import os

from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 10
LANGUAGES = ("system", "en", "zh_CN")


def open_settings() -> QSettings:
    folder = os.environ.get("QDESK_SETTINGS_DIR")
    if folder:
        return QSettings(os.path.join(folder, "qdesk.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "qdesk", "qdesk")


class Settings:
    """Typed access to the settings file; every setter writes through."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or open_settings()

    def _json(self, key: str, default):
        raw = self.q.value(key, None)
        if raw is None:
            return default
        try:
            value = json.loads(str(raw))
        except ValueError:
            return default
        return value if isinstance(value, type(default)) else default

    def _set_json(self, key: str, value) -> None:
        self.q.setValue(key, json.dumps(value))
        self.q.sync()

    # -- language ------------------------------------------------------------------------
    @property
    def language(self) -> str:
        value = str(self.q.value("ui/language", "system"))
        return value if value in LANGUAGES else "system"

    @language.setter
    def language(self, value: str) -> None:
        self.q.setValue("ui/language", value if value in LANGUAGES else "system")
        self.q.sync()

    # -- recent models -------------------------------------------------------------------
    def recent(self) -> list[dict]:
        rows = self._json("models/recent", [])
        return [r for r in rows if isinstance(r, dict) and isinstance(r.get("text"), str)
                and r.get("backend", "auto") in ("auto", "hf", "llamacpp")]

    def add_recent(self, text: str, backend: str, name: str) -> None:
        rows = [r for r in self.recent() if (r["text"], r.get("backend", "auto")) != (text, backend)]
        rows.insert(0, {"text": text, "backend": backend, "name": name})
        self._set_json("models/recent", rows[:MAX_RECENT])

    def remove_recent(self, text: str, backend: str) -> None:
        rows = [r for r in self.recent() if (r["text"], r.get("backend", "auto")) != (text, backend)]
        self._set_json("models/recent", rows)

    # -- page options (each page keeps a JSON object of its own) ---------------------------
    def page_options(self, page: str) -> dict:
        return self._json(f"pages/{page}", {})

    def set_page_options(self, page: str, options: dict) -> None:
        self._set_json(f"pages/{page}", options)

    # -- window layout -------------------------------------------------------------------
    def window_state(self, name: str) -> QByteArray | None:
        value = self.q.value(f"window/{name}", None)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_state(self, name: str, value: QByteArray) -> None:
        self.q.setValue(f"window/{name}", value)

    def value(self, key: str, default=None):
        return self.q.value(key, default)

    def set_value(self, key: str, value) -> None:
        self.q.setValue(key, value)
        self.q.sync()

    def sync(self) -> None:
        self.q.sync()
