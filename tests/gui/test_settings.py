"""What the window remembers across a restart: layout, page, language, the
quantize page's options, recent models (a temporary QSettings folder)."""

from __future__ import annotations

from qdesk.gui.quantize_request import QuantizeOptions
from qdesk.gui.settings import Settings


def test_settings_persist_across_a_restart(make_window, temporary_settings):
    w = make_window()
    win = w.window
    win.resize(1100, 700)
    win.splitter.setSizes([260, 840])
    win.show_page("chat")
    page = win.page("quantize")
    options = QuantizeOptions(method="awq", bits=3, group_size=32, symmetric=False,
                              calib="zh", calib_samples=16, calib_tokens=128, seed=7)
    page.form.set_options(options)
    win.settings.language = "zh_CN"
    win.settings.add_recent("/some/model", "llamacpp", "some model")
    w.close()
    assert (temporary_settings / "qdesk.ini").is_file()

    again = make_window().window
    assert (again.width(), again.height()) == (1100, 700)
    assert abs(again.splitter.sizes()[0] - 260) <= 2
    assert again.current_page().page_key == "chat"
    restored = again.page("quantize").form.options()
    for name in ("method", "bits", "group_size", "symmetric", "calib", "calib_samples",
                 "calib_tokens", "seed"):
        assert getattr(restored, name) == getattr(options, name), name
    assert Settings().language == "zh_CN"
    assert Settings().recent()[0] == {"text": "/some/model", "backend": "llamacpp",
                                      "name": "some model"}


def test_damaged_settings_fall_back_to_defaults(make_window, temporary_settings):
    (temporary_settings / "qdesk.ini").write_text(
        "[ui]\nlanguage=klingon\n[models]\nrecent=[not json\n[pages]\nquantize={\"bits\": 5}\n")
    w = make_window()
    assert w.window.settings.language == "system"
    assert w.window.settings.recent() == []
    assert w.window.page("quantize").form.options().bits == 4
