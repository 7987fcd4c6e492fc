"""The Chinese translation is complete and loads: every string the GUI's code
marks for translation (pyside6-lupdate finds them) has a finished Chinese
entry with the same placeholders, and switching the language changes the
window's texts and back."""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import PySide6
import pytest

from qdesk.core.paths import resources_dir

TS = resources_dir() / "translations" / "qdesk_zh_CN.ts"
GUI = Path(__file__).resolve().parents[2] / "qdesk" / "gui"


def _messages(path: Path) -> dict[tuple[str, str], ET.Element]:
    out = {}
    for context in ET.parse(path).getroot().iter("context"):
        name = context.find("name").text or ""  # "": lupdate could not tell the context
        for m in context.iter("message"):
            out[(name, m.find("source").text)] = m.find("translation")
    return out


def test_the_ts_file_has_no_unfinished_entry():
    messages = _messages(TS)
    assert len(messages) > 200
    bad = [key for key, t in messages.items()
           if t is None or t.get("type") in ("unfinished", "vanished", "obsolete") or not (t.text or "").strip()]
    assert bad == []
    for (context, source), t in messages.items():
        assert sorted(re.findall(r"\{[^}]*\}", source)) == sorted(re.findall(r"\{[^}]*\}", t.text)), \
            (context, source, t.text)


def test_every_string_in_the_code_is_translated(tmp_path):
    lupdate = Path(PySide6.__file__).parent / "lupdate"
    files = sorted(str(p) for p in GUI.rglob("*.py"))
    out = tmp_path / "code.ts"
    subprocess.run([str(lupdate), *files, "-locations", "none", "-ts", str(out)], check=True,
                   capture_output=True, timeout=120)
    in_code = set(_messages(out))
    shipped = _messages(TS)
    sources = {source for _, source in shipped}
    # A call lupdate cannot place (a local alias of translate) counts when its text
    # is translated in some context.
    missing = sorted(k for k in in_code if k not in shipped and not (k[0] == "" and k[1] in sources))
    assert missing == [], f"{len(missing)} strings have no Chinese entry: {missing[:10]}"


@pytest.fixture
def translations(qapp):
    from qdesk.gui.i18n import Translations

    t = Translations(qapp)
    yield t
    t.apply("en")


def test_chinese_loads_and_switching_changes_the_window(make_window, translations):
    w = make_window().window
    quantize = w.page("quantize")
    assert w.pages.tabText(0) == "Quantize"
    assert translations.apply("zh_CN")
    assert w.pages.tabText(0) == "量化"
    assert quantize.run_button.text() == "运行"
    assert w.sidebar.heading.text() == "模型"
    assert w.file_menu.title() == "文件(&F)"
    assert translations.apply("en")
    assert w.pages.tabText(0) == "Quantize" and quantize.run_button.text() == "Run"


def test_a_missing_qm_is_built_from_the_ts(tmp_path, monkeypatch):
    from qdesk.gui import i18n

    monkeypatch.setenv("QDESK_DATA_DIR", str(tmp_path / "data"))
    copy = tmp_path / "translations"
    copy.mkdir()
    (copy / TS.name).write_bytes(TS.read_bytes())
    monkeypatch.setattr(i18n, "translations_dir", lambda: copy)
    qm = i18n.qm_file("zh_CN")
    assert qm == tmp_path / "data" / "translations" / "qdesk_zh_CN.qm"
    assert qm.stat().st_size > 1000
    assert i18n.qm_file("en") is None


def test_system_language_and_settings():
    from qdesk.gui.i18n import resolve_language

    assert resolve_language("zh_CN") == "zh_CN"
    assert resolve_language("en") == "en"
    assert resolve_language("system") in ("en", "zh_CN")
