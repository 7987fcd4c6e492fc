"""The models sidebar: the hub download dialog (offline here: one clear message),
the memory estimate before loading, recent models."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from qdesk.gui.widgets.download_dialog import DownloadDialog


def test_download_offline_is_one_clear_message(make_window, qtbot):
    w = make_window()
    w.window.runner.show_dialogs = True
    bar = w.window.sidebar
    bar.hub_id.setText("org/model@v1")
    assert bar.download.isEnabled()
    bar.download.click()
    key = "org/model@v1"
    qtbot.waitUntil(lambda: bool(w.errors), timeout=60_000)
    assert len(w.errors) == 1
    assert "cannot download it (no network" in w.errors[0][1]
    qtbot.waitUntil(lambda: bar.download_dialog(key) is None, timeout=10_000)
    assert not [d for d in w.window.findChildren(DownloadDialog) if d.isVisible()]
    assert w.window.models.entry(key).state == "failed"
    boxes = [b for b in w.window.findChildren(QMessageBox, "qdesk-error") if b.isVisible()]
    assert len(boxes) == 1
    boxes[0].close()


def test_not_a_hub_id_is_refused_before_anything_starts(make_window):
    w = make_window()
    bar = w.window.sidebar
    bar.hub_id.setText("not a hub id")
    assert not bar.download.isEnabled()
    bar._download_clicked()
    assert len(w.errors) == 1 and "not a hub id" in w.errors[0][1]
    assert w.window.runner.is_idle()


def test_download_dialog_shows_bytes_speed_and_time_left(qtbot, monkeypatch):
    import qdesk.gui.widgets.download_dialog as dd

    clock = [100.0]
    monkeypatch.setattr(dd.time, "monotonic", lambda: clock[0])
    d = DownloadDialog("org/model")
    qtbot.addWidget(d)
    d.progress(0, 100 * 2**20)
    clock[0] += 2.0
    d.progress(20 * 2**20, 100 * 2**20)
    text = d.detail.text()
    assert "20 MiB of 100 MiB" in text
    assert "10 MiB/s" in text
    assert "0:08 left" in text
    cancelled = []
    d.cancel_requested.connect(lambda: cancelled.append(True))
    d.reject()  # Esc or the window's close button: cancel the download
    assert cancelled == [True]


def test_estimate_is_shown_and_a_model_that_does_not_fit_is_refused(make_window, tiny_llama,
                                                                   monkeypatch):
    import qdesk.core.models.device as device

    w = make_window()
    bar = w.window.sidebar
    item = bar.available_group.child(0)  # the demo
    bar.tree.setCurrentItem(item)
    assert "free" in bar.estimate.text()
    monkeypatch.setattr(device, "available_memory_bytes", lambda kind: 10 * 2**20)
    assert bar.request_load(str(tiny_llama)) is None
    assert len(w.errors) == 1 and "needs about" in w.errors[0][1] and "free" in w.errors[0][1]
    assert w.window.models.entries() == [] and w.window.runner.is_idle()


def test_recent_models_are_listed_after_a_restart(make_window, qtbot, tiny_llama):
    w = make_window()
    w.load(str(tiny_llama))
    w.close()
    again = make_window()
    texts = [again.window.sidebar.available_group.child(i).toolTip(0)
             for i in range(again.window.sidebar.available_group.childCount())]
    assert str(tiny_llama) in texts


def test_long_facts_wrap_without_losing_a_line(make_window, qapp, qtbot):
    # A QFormLayout gave wrapped values the heights of another width: a long path
    # lost its last line in a 1024x640 window. Every value gets the height its
    # text needs at its width, with the app's font (the CJK fallback included).
    from PySide6.QtGui import QFont

    from qdesk.core.models import ModelFacts
    from qdesk.gui.i18n import Translations

    font = QFont(qapp.font())
    Translations(qapp)._apply_font()
    try:
        w = make_window()
        w.window._script_resize("1024", "640")
        qtbot.wait(100)  # the window settles (the sidebar shows its selection's facts)
        view = w.window.sidebar.facts
        view.set_facts(ModelFacts(
            "demo (SmolLM2-135M-Instruct)", "demo",
            "/root/.local/share/qdesk/models/SmolLM2-135M-Instruct-bf16-0.1.2",
            "hf", "LlamaForCausalLM", 134_515_008, 30, 576, 49_152, 8192, "float32", "cpu",
            2**29))
        qtbot.wait(50)
        for key in ("model", "source", "architecture", "memory"):
            label = view._values[key]
            assert label.height() >= label.heightForWidth(label.width()), key
        source = view._values["source"]
        assert source.height() >= 3 * source.fontMetrics().height()  # it wraps, all shown
    finally:
        qapp.setFont(font)


def _packed_checkpoint(source_folder, out):
    """A 4-bit group-64 RTN checkpoint of ``source_folder`` (qdesk's own writer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qdesk.core.quant.checkpoint import write_checkpoint
    from qdesk.core.quant.primitives import QuantizedWeight, choose_qparams, quantize

    model = AutoModelForCausalLM.from_pretrained(str(source_folder), dtype=torch.float32)
    records = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            w = module.weight.detach()
            scale, zero = choose_qparams(w, 4, 64, True)
            records[name] = QuantizedWeight(quantize(w, scale, zero, 4, 64), scale, zero, 4, 64)
    recipe = {"config": {"method": "rtn", "bits": 4, "group_size": 64, "symmetric": True},
              "parameters": model.num_parameters()}
    return write_checkpoint(model, AutoTokenizer.from_pretrained(str(source_folder)), records,
                            out, recipe)


def test_a_packed_model_switches_to_int8_activations_and_back(make_window, qtbot, tiny_llama,
                                                              tmp_path):
    import threading

    from qdesk.core.packed import native

    if native.library() is None:
        pytest.skip(f"qdesk's CPU kernels: {native.why_not()}")
    w = make_window()
    models, bar = w.window.models, w.window.sidebar
    dense = w.load(str(tiny_llama))
    assert not models.can_use_int8_activations(dense.key)
    packed = w.load(str(_packed_checkpoint(tiny_llama, tmp_path / "q4")))
    assert packed.state == "ready" and models.can_use_int8_activations(packed.key)
    models.select(packed.key)
    chat = w.window.page("chat")
    assert chat.set_models([packed.key])
    assert "int8" not in bar.facts._values["quantization"].text()
    assert "int8" not in chat.panes[0].details.text()
    assert models.set_int8_activations(packed.key, True)
    assert models.entry(packed.key).facts.quantization["int8_activations"] is True
    assert "int8 activations" in bar.facts._values["quantization"].text()
    assert "int8 act" in chat.panes[0].details.text()  # the pane's header is redrawn
    # refused while a job uses the model: no reply mixes the two products
    release = threading.Event()
    job = w.window.runner.start_call("holds the model", lambda report: release.wait(30),
                                     models=(packed.key,))
    assert job is not None
    assert not models.set_int8_activations(packed.key, False)
    assert w.errors and "in use" in w.errors[-1][1]
    assert models.entry(packed.key).facts.quantization["int8_activations"] is True
    release.set()
    qtbot.waitUntil(w.window.runner.is_idle, timeout=30_000)
    assert models.set_int8_activations(packed.key, False)
    assert "int8_activations" not in models.entry(packed.key).facts.quantization
    assert "int8" not in bar.facts._values["quantization"].text()
    assert "int8" not in chat.panes[0].details.text()
