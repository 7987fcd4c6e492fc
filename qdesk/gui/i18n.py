"""Languages: which one, loading its translation, switching while the app runs.

The source of the Chinese translation is ``resources/translations/qdesk_zh_CN.ts``
(``pyside6-lupdate`` extracts the strings, a translator fills them in). The
compiled ``.qm`` is built by ``make setup`` beside it; when it is missing or
older than the ``.ts`` (a plain ``pip install``, an edited translation) it is
built at first use into the user data folder with the ``lrelease`` that ships
in the PySide6 wheel.

Switching: installing a translator sends every widget a ``LanguageChange``
event; each widget of qdesk sets its texts in one ``retranslate()`` method,
called from its constructor and from ``changeEvent`` on that event.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEvent, QLibraryInfo, QLocale, QTranslator
from PySide6.QtGui import QFont, QFontDatabase
from PySide6.QtWidgets import QApplication

from qdesk.core.paths import data_dir, resources_dir

log = logging.getLogger(__name__)

LANGUAGES = {"en": "English", "zh_CN": "简体中文"}  # shown in their own language
# Families that carry Simplified Chinese glyphs, by platform, best first.
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
    "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "Droid Sans Fallback",
)


def translations_dir() -> Path:
    return resources_dir() / "translations"


def system_language() -> str:
    """``zh_CN`` for a Chinese system locale, else ``en``."""
    locale = QLocale.system()
    if locale.language() == QLocale.Language.Chinese:
        return "zh_CN"
    return "en"


def resolve_language(setting: str) -> str:
    """A setting (``system``, ``en``, ``zh_CN``) -> the language to show."""
    return system_language() if setting not in LANGUAGES else setting


def _lrelease() -> Path:
    import PySide6

    return Path(PySide6.__file__).parent / "lrelease"


def build_qm(ts: Path, qm: Path) -> Path:
    """Compile ``ts`` to ``qm`` with PySide6's lrelease (temporary name, then rename)."""
    qm.parent.mkdir(parents=True, exist_ok=True)
    tmp = qm.with_name(f".{qm.name}.partial")
    result = subprocess.run([str(_lrelease()), "-silent", str(ts), "-qm", str(tmp)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"lrelease failed on {ts}: {result.stderr.strip()[:200]}")
    tmp.replace(qm)
    return qm


def qm_file(language: str) -> Path | None:
    """The compiled translation for ``language``, built if need be; None for English."""
    if language == "en":
        return None
    ts = translations_dir() / f"qdesk_{language}.ts"
    if not ts.is_file():
        return None
    for qm in (ts.with_suffix(".qm"), data_dir() / "translations" / f"qdesk_{language}.qm"):
        if qm.is_file() and qm.stat().st_mtime >= ts.stat().st_mtime:
            return qm
    try:
        return build_qm(ts, data_dir() / "translations" / f"qdesk_{language}.qm")
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("cannot build the %s translation: %s", language, e)
        return None


def cjk_family() -> str | None:
    families = set(QFontDatabase.families())
    return next((f for f in CJK_FAMILIES if f in families), None)


class Translations:
    """Installs the translators of one language (qdesk's and Qt's own dialogs)."""

    def __init__(self, app: QApplication) -> None:
        self.app = app
        self.language = "en"
        self._installed: list[QTranslator] = []
        self._base_font = QFont(app.font())

    def apply(self, language: str) -> bool:
        """Switch to ``language`` (``en`` or ``zh_CN``); False if its file is missing."""
        for t in self._installed:
            self.app.removeTranslator(t)
        self._installed = []
        ok = True
        if language != "en":
            qm = qm_file(language)
            ours = QTranslator(self.app)
            if qm is None or not ours.load(str(qm)):
                log.warning("no %s translation; showing English", language)
                ok = False
                language = "en"
            else:
                self._installed.append(ours)
                qt = QTranslator(self.app)
                if qt.load(f"qtbase_{language}", QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)):
                    self._installed.append(qt)
        for t in self._installed:
            self.app.installTranslator(t)
        # Qt posts LanguageChange to every widget: deliver them now, so the texts
        # have changed when this returns (a screenshot may follow at once).
        QCoreApplication.sendPostedEvents(None, QEvent.Type.LanguageChange)
        self.language = language
        QLocale.setDefault(QLocale(language if language != "en" else "en_US"))
        self._apply_font()
        return ok

    def _apply_font(self) -> None:
        """Chinese glyphs from a CJK family in either language (model output and
        prompts may be Chinese); the Latin face stays the platform's."""
        font = QFont(self._base_font)
        cjk = cjk_family()
        if cjk:
            font.setFamilies([*self._base_font.families(), cjk])
        self.app.setFont(font)


def translate(context: str, text: str) -> str:
    return QCoreApplication.translate(context, text)
