"""The compare page on the real demo model: its table is ``qdesk compare --json``'s."""

from __future__ import annotations

import json
import os
import time

import pytest

from qdesk.cli import main
from qdesk.gui.context import AppContext
from qdesk.gui.jobs import JobRunner
from qdesk.gui.model_registry import ModelRegistry
from qdesk.gui.pages.compare import ComparePage
from qdesk.gui.script import ScriptActions
from qdesk.gui.settings import Settings
from qdesk.gui.widgets.compare_table import divergence_rows


@pytest.fixture
def page(qtbot, qapp, tmp_path):
    os.environ["QDESK_SETTINGS_DIR"] = str(tmp_path / "settings")
    settings = Settings()
    runner = JobRunner(None)
    runner.show_dialogs = False
    models = ModelRegistry(runner, settings)
    keys = [models.load("demo"), models.load("demo", "llamacpp")]
    t0 = time.monotonic()
    while len(models.ready()) < 2 and time.monotonic() - t0 < 300:
        qapp.processEvents()
        time.sleep(0.01)
    p = ComparePage(AppContext(settings, runner, models, ScriptActions()))
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    p.errors = []
    runner.error_shown.connect(lambda title, message: p.errors.append(message))
    p.keys = keys
    yield p
    p.cancel_action()
    qtbot.waitUntil(lambda: p.job is None, timeout=60_000)
    models.close_all()


def test_the_table_equals_the_cli_json(page, qtbot, capsys, tmp_path):
    page.set_choice(page.keys[0], [page.keys[1]])
    page.ctx.setValue(64)
    page.chunks.setValue(3)
    assert page.run_divergence()
    assert page.progress.isVisible()  # it runs in the job runner
    qtbot.waitUntil(lambda: page.job is None, timeout=180_000)
    assert not page.errors
    ours = page.result.to_json()
    # the result can be saved at once (the buttons were once left disabled)
    assert page.save_button.isEnabled() and page.report_button.isEnabled()

    code = main(["compare", "demo", "demo", "--backend", "hf,llamacpp", "--text", "heldout",
                 "--ctx", "64", "--chunks", "3", "--json"])
    assert code == 0
    cli = json.loads(capsys.readouterr().out)
    for key in ("text", "text_tokens", "bos_per_window"):
        assert ours[key] == cli[key]
    assert len(ours["reports"]) == len(cli["reports"]) == 1
    a, b = ours["reports"][0], cli["reports"][0]
    a.pop("seconds"), b.pop("seconds")
    # Counts are equal; the figures agree to float32 rounding (the two loads of the
    # same weights run their matmuls on other thread layouts: measured differences
    # about 1e-7 relative).
    for key in ("model", "reference", "ctx", "windows", "tokens", "flips"):
        assert a[key] == b[key], key
    assert [x["tokens"] for x in a["flip_bins"]] == [x["tokens"] for x in b["flip_bins"]]
    assert [x["flips"] for x in a["flip_bins"]] == [x["flips"] for x in b["flip_bins"]]
    differences = {"ln_ppl_ratio", "ln_ppl_ratio_unc", "ppl_diff", "ppl_diff_unc"}
    for key, value in b.items():  # differences of near-equal numbers: an absolute bound
        if isinstance(value, float):
            tol = {"abs": 1e-4} if key in differences else {"rel": 1e-5, "abs": 2e-6}
            assert a[key] == pytest.approx(value, nan_ok=True, **tol), key
    for label in b["kld_percentiles"]:
        assert a["kld_percentiles"][label] == pytest.approx(b["kld_percentiles"][label],
                                                            rel=1e-4, abs=1e-8)
    # the table shows exactly the page's numbers, laid out as llama-perplexity does
    report = page.result.reports[0]
    for label, text in divergence_rows(report):
        assert page.table.value(label, 0) == text
    assert page.table.value("Mean KLD", 0) == (
        f"{report.mean_kld:.6f} ± {report.mean_kld_unc:.6f}")
    assert page.table.value("Same top p", 0) == (
        f"{100 * report.same_top_p:.3f} ± {100 * report.same_top_p_unc:.3f} %")
    assert page.table.value("Flips", 0) == f"{b['flips']} of {b['tokens']}"
    # the plots hold the same statistics
    want = [float("nan") if x["flip_rate"] is None else 100 * x["flip_rate"] for x in b["flip_bins"]]
    assert page.flip_plot.rates[0] == pytest.approx(want, nan_ok=True)
    assert page.quality_plot.points[-1][2] == report.mean_kld
    assert page.save("json", tmp_path / "r.json") and page.save("html", tmp_path / "r.html")
    saved = json.loads((tmp_path / "r.json").read_text("utf-8"))
    assert saved["divergence"]["reports"][0]["mean_kld"] == report.mean_kld
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text("utf-8")


def test_cancel_stops_the_comparison(page, qtbot):
    page.set_choice(page.keys[0], [page.keys[1]])
    page.ctx.setValue(64)
    page.chunks.setValue(0)  # the whole text: many windows
    assert page.run_divergence()
    qtbot.waitUntil(lambda: page.progress.value() >= 1, timeout=120_000)
    page.cancel_action()
    qtbot.waitUntil(lambda: page.job is None, timeout=60_000)
    assert page.result is None and not page.errors
    assert "Cancelled" in page.status.text()
