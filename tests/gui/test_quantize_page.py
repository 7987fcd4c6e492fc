"""The Quantize page: a run's events arrive in order and fill the plot (one bar
per layer), the prediction equals what the job reports, Cancel leaves nothing,
the held-out check is shown, and bad input gives one dialog and leaves the page
usable."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QThread

from qdesk.core.quant.events import (
    CalibrationProgress,
    LayerQuantized,
    LayerSensitivity,
    QuantizeSummary,
    SavingCheckpoint,
)
from qdesk.gui.quantize_request import GROUP_SIZES, QuantizeOptions

FAST = dict(calib_samples=4, calib_tokens=64)


@pytest.fixture
def tiny(make_window, tiny_llama, qtbot):
    """A window with the tiny Llama loaded and measured, on the Quantize page."""
    w = make_window()
    entry = w.load(str(tiny_llama))
    assert entry.state == "ready", w.errors
    page = w.window.page("quantize")
    w.window.show_page("quantize")
    qtbot.waitUntil(lambda: page.shapes() is not None, timeout=60_000)
    w.page = page
    return w


def _run(qtbot, w, timeout=180_000, **options):
    page = w.page
    page.form.set_options(QuantizeOptions.from_mapping(options, page.form.options()))
    assert page.run_action(), w.errors
    assert page.job is not None  # returned at once: the job runs in a worker
    qtbot.waitUntil(lambda: page.job is None, timeout=timeout)


def test_run_events_in_order_plot_and_prediction(tiny, qtbot, tmp_path):
    page = tiny.page
    out = tmp_path / "tiny-gptq4"
    seen_threads = []
    original = page._on_event
    page._on_event = lambda e: (seen_threads.append(QThread.currentThread()), original(e))[1]
    options = dict(method="gptq", bits=4, group_size=32, symmetric=True, output=str(out), **FAST)
    page.form.set_options(QuantizeOptions.from_mapping(options, page.form.options()))
    predicted = page.predicted()
    _run(qtbot, tiny, **options)
    assert tiny.errors == []
    events = page.events
    kinds = [type(e) for e in events]
    # calibration first, then one event per Linear in order, saving, the summary last
    assert kinds[0] is CalibrationProgress
    layers = [e for e in events if isinstance(e, LayerQuantized)]
    n = len(page.shapes().linears)
    assert n == 14  # 2 layers x (q, k, v, o, gate, up, down)
    assert [e.index for e in layers] == list(range(1, n + 1))
    assert [e.name for e in layers] == [lin.name for lin in page.shapes().linears]
    assert kinds.index(SavingCheckpoint) > kinds.index(LayerQuantized)
    assert kinds[-1] is QuantizeSummary
    assert all(t is QThread.currentThread() for t in seen_threads)  # delivered on the GUI thread
    # the plot holds one bar per layer, each the layer's reported error
    assert page.error_plot.bar_count() == n
    assert list(page.error_plot.errors) == [e.rel_error for e in layers]
    # the prediction made before Run is what the job reports
    summary = page.summary
    assert predicted.exact
    assert round(predicted.bits_per_weight, 4) == summary.bits_per_weight
    weights = (out / "model.safetensors").stat().st_size
    assert abs(predicted.weights_bytes - weights) <= 0.01 * weights
    total = sum(f.stat().st_size for f in out.iterdir())
    assert abs(predicted.output_bytes - total) <= 0.05 * total
    # the summary is shown; the new model loads from disk; the source is reloaded
    assert page.summary_view.chat.isVisible()
    assert "4.250" in page.summary_view.headline.text() or f"{summary.bits_per_weight:.3f}" in \
        page.summary_view.headline.text()
    models = tiny.window.models
    qtbot.waitUntil(lambda: all(e.state != "loading" for e in models.entries()), timeout=60_000)
    new = models.entry(page.new_key)
    assert new.state == "ready" and new.is_quantized, new.error
    assert new.facts.quantization["bits_per_weight"] == summary.bits_per_weight
    assert models.entry(page.source_key).state == "ready"
    # "Chat with it" asks for the chat page with the original and the new model
    asked = []
    tiny.window.context.chat_requested.connect(asked.append)
    page.summary_view.chat.click()
    assert asked == [[page.source_key, page.new_key]]


def test_sensitivity_plan_shows_its_measurement_and_choice(tiny, qtbot, tmp_path):
    page = tiny.page
    _run(qtbot, tiny, method="rtn", bits=3, group_size=32, plan="sensitivity",
         budget_bpw=4.0, output=str(tmp_path / "sens"), **FAST)
    assert tiny.errors == []
    measured = [e for e in page.events if isinstance(e, LayerSensitivity)]
    n = len(page.shapes().linears)
    assert len(measured) == n
    assert [b for b, _ in measured[0].errors] == [3, 4, 8]
    page.flush()
    assert page.sensitivity_plot.measured() == n
    # the table shows the bits the search chose, layer by layer
    chosen = {e.name: e.bits for e in page.events if isinstance(e, LayerQuantized)}
    assert {r.name: r.bits for r in page.plan_table.rows()} == chosen
    assert len(set(chosen.values())) > 1
    assert page.summary.bits_per_weight <= 4.0


def test_edited_table_is_the_plan_the_job_runs(tiny, qtbot, tmp_path):
    page = tiny.page
    page.form.set_options(QuantizeOptions.from_mapping(
        dict(method="rtn", bits=4, group_size=64, plan="uniform", output=str(tmp_path / "c"),
             **FAST), page.form.options()))
    table = page.plan_table.model
    before = page.predicted().bits_per_weight
    table.setData(table.index(0, 1), "keep")  # keep the first Linear
    table.setData(table.index(1, 1), "8")
    assert page.form.options().plan == "custom"
    predicted = page.predicted()
    assert predicted.bits_per_weight > before
    _run(qtbot, tiny)
    events = page.events
    assert any(type(e).__name__ == "LayerKept" for e in events)
    assert round(predicted.bits_per_weight, 4) == page.summary.bits_per_weight
    recipe = json.loads((tmp_path / "c" / "qdesk.json").read_text())
    assert recipe["plan"]["name"] == "custom"


def test_only_dividing_group_sizes_are_offered(tiny):
    form = tiny.page.form
    widths = {lin.in_features for lin in tiny.page.shapes().linears}
    assert widths == {64, 128}
    model = form.group.model()
    offered = {g for i, g in enumerate(GROUP_SIZES) if model.item(i).isEnabled()}
    assert offered == {-1, 32, 64}
    assert form.refused_group_sizes() == [128, 192, 256]
    assert "192" in form.group_note.text() and "64" in form.group_note.text()


def test_existing_output_folder_is_one_dialog(tiny, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("the user's file")
    page = tiny.page
    page.form.set_options(QuantizeOptions.from_mapping(dict(output=str(out), **FAST),
                                                       page.form.options()))
    assert not page.run_action()
    assert len(tiny.errors) == 1 and "exists" in tiny.errors[0][1]
    assert page.job is None and page.run_button.isEnabled()
    assert (out / "mine.txt").read_text() == "the user's file"


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"\xff\xfe\x00 not utf-8 \xc3\x28", "not UTF-8"),
])
def test_bad_calibration_file_is_one_dialog(tiny, qtbot, tmp_path, content, words):
    calib = tmp_path / "calib.txt"
    calib.write_bytes(content)
    page = tiny.page
    out = tmp_path / "out"
    _run(qtbot, tiny, method="rtn", calib=str(calib), output=str(out), **FAST)
    assert len(tiny.errors) == 1 and words in tiny.errors[0][1], tiny.errors
    assert "Traceback" not in tiny.errors[0][1]
    assert not out.exists()
    assert page.summary_view._state == "failed"
    assert page.run_button.isEnabled()  # usable: the next run works
    tiny.errors.clear()
    _run(qtbot, tiny, method="rtn", calib="mix", output=str(out))
    assert tiny.errors == [] and out.is_dir()


def test_too_little_memory_is_said_before_starting(tiny, monkeypatch, tmp_path):
    import qdesk.core.models.device as device

    monkeypatch.setattr(device, "available_memory_bytes", lambda kind: 1024)
    page = tiny.page
    page.form.set_options(QuantizeOptions.from_mapping(dict(output=str(tmp_path / "m"), **FAST),
                                                       page.form.options()))
    page._update_prediction()
    assert "color: #b00020" in page.prediction.styleSheet()  # the estimate says so in red
    assert not page.run_action()
    assert len(tiny.errors) == 1 and "memory" in tiny.errors[0][1]
    assert page.job is None and tiny.window.runner.is_idle()


def test_self_check_warning_is_visible(tiny):
    view = tiny.page.summary_view
    summary = QuantizeSummary("gptq", "uniform", 14, 0, 4.25, 0.05, 3.0, "mix", "x", "/tmp/o", 0)
    bad = {"text": "heldout", "windows": 2, "tokens": 256, "mean_kld": 8.4, "same_top_p": 0.02,
           "rtn_mean_kld": 0.3, "seconds": 1.0, "plausible": False,
           "warning": "mean KLD 8.4 is worse than plain RTN's 0.3"}
    view.set_summary(summary, bad)
    assert view.has_warning()
    assert "worse than plain RTN" in view.warning.text()
    good = dict(bad, mean_kld=0.07, same_top_p=0.84, plausible=True, warning=None)
    view.set_summary(summary, good)
    assert not view.has_warning()
    assert "0.0700" in view.check.text() and "84.0%" in view.check.text()


@pytest.mark.slow
def test_cancel_stops_within_a_layer_and_leaves_nothing(make_window, qtbot, tmp_path):
    """On the real demo model (210 Linears), cancelled at the third layer."""
    w = make_window()
    entry = w.load("demo")
    assert entry.state == "ready", w.errors
    page = w.window.page("quantize")
    qtbot.waitUntil(lambda: page.shapes() is not None, timeout=120_000)
    out = tmp_path / "demo-cancelled"
    page.form.set_options(QuantizeOptions.from_mapping(
        dict(method="rtn", bits=4, group_size=64, output=str(out), **FAST), page.form.options()))
    assert page.run_action()
    qtbot.waitUntil(lambda: page.error_plot.bar_count() >= 3, timeout=120_000)
    job = page.job
    page.cancel_button.click()
    # What the worker had yielded by then: delivered to the page, or still queued
    # for the next (throttled) delivery; the plot redraws later still.
    at_cancel = sum(isinstance(e, LayerQuantized) for e in [*page.events, *job._queue.copy()])
    qtbot.waitUntil(lambda: page.job is None, timeout=60_000)
    assert page.summary_view._state == "cancelled"
    layers = [e for e in page.events if isinstance(e, LayerQuantized)]
    assert len(layers) <= at_cancel + 2  # the worker stops at its next yield
    assert len(layers) < 210
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}") for p in tmp_path.iterdir())
    assert w.errors == []
    assert w.window.models.entry(entry.key).state == "ready"  # restored, still usable


def test_calibration_preview_shows_samples(tiny, qtbot):
    page = tiny.page
    page.form.set_options(QuantizeOptions.from_mapping(dict(calib="general", calib_tokens=64),
                                                       page.form.options()))
    page._preview()
    qtbot.waitUntil(lambda: getattr(page, "preview_dialog", None) is not None, timeout=60_000)
    dialog = page.preview_dialog
    text = dialog.text.toPlainText()
    assert text.count("─" * 40) == 2  # three samples
    assert "general" in dialog.heading.text()
    dialog.close()


def test_settings_dialog_chooses_the_language(make_window, qtbot):
    from qdesk.gui.widgets.settings_dialog import SettingsDialog

    w = make_window()
    dialog = SettingsDialog(w.window.settings, w.window)
    chosen = []
    dialog.language_chosen.connect(chosen.append)
    dialog.language.setCurrentIndex(2)  # system, English, 简体中文
    dialog.accept()
    assert chosen == ["zh_CN"]


def test_dense_targets_switch_reaches_the_method_config(tiny):
    form = tiny.page.form
    for method, auto in (("gptq", False), ("signround", True)):
        form.set_options(QuantizeOptions(method=method))
        assert not form.dense_targets.isHidden()  # the row is shown for this method
        assert form.options().dense_targets is None
        assert form.options().config().dense_targets is auto  # the method's own default
        form.dense_targets.setCurrentIndex(form.dense_targets.findData("on"))
        assert form.options().config().dense_targets is True
        form.dense_targets.setCurrentIndex(form.dense_targets.findData("off"))
        assert form.options().config().dense_targets is False
    form.set_options(QuantizeOptions(method="awq", dense_targets=True))
    assert form.dense_targets.isHidden()
    assert not hasattr(form.options().config(), "dense_targets")  # AWQ has none
    assert QuantizeOptions.from_mapping({"dense_targets": "on"}).dense_targets is True
    assert QuantizeOptions.from_mapping({"dense_targets": "auto"}).dense_targets is None
