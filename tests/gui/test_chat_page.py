"""The chat page on the real demo model: the dense copy (transformers) beside the
shipped Q4_1 GGUF (llama.cpp), which flips the first token of the France answer."""

from __future__ import annotations

import threading

import pytest

from qdesk.gui.context import AppContext
from qdesk.gui.jobs import JobRunner
from qdesk.gui.model_registry import ModelRegistry
from qdesk.gui.pages.chat import ChatPage
from qdesk.gui.script import ScriptActions
from qdesk.gui.settings import Settings

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def loaded(qapp, tmp_path_factory):
    """One registry with both models, kept for the module (loading is the slow part)."""
    import os
    import time

    os.environ["QDESK_SETTINGS_DIR"] = str(tmp_path_factory.mktemp("settings"))
    settings = Settings()
    runner = JobRunner(None)
    runner.show_dialogs = False
    models = ModelRegistry(runner, settings)
    keys = [models.load("demo"), models.load("demo", "llamacpp")]
    t0 = time.monotonic()
    while len(models.ready()) < 2 and time.monotonic() - t0 < 300:
        qapp.processEvents()
        time.sleep(0.01)
    assert len(models.ready()) == 2, [e.error for e in models.entries()]
    yield settings, runner, models, keys
    models.close_all()


@pytest.fixture
def page(qtbot, loaded):
    settings, runner, models, keys = loaded
    errors = []
    runner.error_shown.connect(lambda title, message: errors.append(message))
    context = AppContext(settings, runner, models, ScriptActions())
    p = ChatPage(context)
    qtbot.addWidget(p)
    p.resize(1200, 760)
    p.show()
    assert p.set_models(keys)
    p.sampling.max_new.setValue(12)
    p.errors = errors
    yield p
    p.shutdown()
    runner.error_shown.disconnect()


def _run(qtbot, page, start):
    assert start()
    qtbot.waitUntil(lambda: page.job is None, timeout=180_000)


def _last(page, pane):
    return page.transcript.turns[-1].panes[pane].current


def test_two_panes_graphs_tooltips_inspector_follow_and_save(page, qtbot, tmp_path):
    _run(qtbot, page, lambda: page.send(PROMPT))
    assert not page.errors
    ref, q = _last(page, 0), _last(page, 1)
    assert ref.text.startswith("The capital of France is Paris")
    # the graphs count what the replies hold, and mark the engine's flips
    page.graphs.flush()
    assert page.graphs.drawn_counts() == [len(ref.tokens), len(q.tokens)]
    assert page.graphs.drawn_counts() == [ref.reply.n_tokens, q.reply.n_tokens]
    flips = [i for i, a in enumerate(q.agreements) if a.flip]
    assert flips and flips[0] == 0  # the near tie at the first token
    assert page.graphs.drawn_flips(1) == flips
    assert page.graphs.drawn_flips(0) == []
    assert list(page.graphs.drawn_margins(1)) == pytest.approx([t.margin for t in q.tokens])
    assert page.panes[1].view.flips(0) == [a.flip for a in q.agreements]
    # the tooltip shows the engine's numbers, this model's top-k and the reference's
    tip = page.panes[1].view.tooltip_html(0, 0)
    a, t, top = q.agreements[0], q.tokens[0], q.ref_top[0]
    assert f"KLD {a.kld:.4f}" in tip and f"Δp {a.dp:+.3f}" in tip
    assert f"margin {t.margin:.3f}" in tip and "flip" in tip
    assert f"{t.top_probs[1]:.3f}" in tip and f"{top.top_probs[0]:.3f}" in tip
    assert "reference, same prefix" in tip
    # the inspector too; its bars are the two distributions
    assert page.inspect(1, 0, highlight=True)
    ins = page.inspector
    assert page.inspector_area.isVisible()
    assert ins.figures["kld"].text() == f"{a.kld:.4f}"
    assert ins.figures["margin"].text() == f"{t.margin:.4f}"
    assert ins.figures["ref_margin"].text() == f"{a.ref_margin:.4f}"
    assert ins.figures["dp"].text() == f"{a.dp:+.4f}"
    n = ins.top_n.value()
    assert ins.pane_bars.values == list(zip(t.top_ids[:n], t.top_probs[:n]))
    assert ins.ref_bars.values == list(zip(top.top_ids[:n], top.top_probs[:n]))
    assert ins.follow_button.isEnabled()
    # a click on a graph point finds its token: highlighted in its pane, in the inspector
    k = 2
    assert page.graphs.pick(k + 0.2, q.tokens[k].margin) == (1, k)
    page.graphs.token_clicked.emit(1, k)
    assert ins.token is q.tokens[k]
    sel = page.panes[1].view.extraSelections()
    assert len(sel) == 1 and sel[0].cursor.selectedText() == q.tokens[k].text
    # follow the reference at the flip: the reference's token there, then the pane's own
    original = q
    _run(qtbot, page, lambda: page.follow_reference(1, 0))
    assert not page.errors
    new = _last(page, 1)
    assert new.kind == "follow" and new.token_ids[0] == ref.token_ids[0] == a.ref_top_id
    assert new.token_ids[:0] == original.token_ids[:0]
    assert page.panes[1].version.text() == "2/2"
    page.graphs.flush()
    assert page.graphs.drawn_counts()[1] == len(new.tokens)
    # a later branch keeps the tokens before its point
    i = 3
    alt = new.tokens[i].top_ids[1]
    _run(qtbot, page, lambda: page.continue_from(1, i, alt))
    later = _last(page, 1)
    assert later.token_ids[:i] == new.token_ids[:i] and later.token_ids[i] == alt
    # versions switch back
    page.select_version(1, 0)
    assert _last(page, 1) is original
    assert page.panes[1].view.token_count(0) == len(original.tokens)

    # save -> load in a fresh page: every statistic, the same graphs, no model run
    path = tmp_path / "chat.json"
    assert page.file_action("save", path)
    assert page.file_action("markdown", tmp_path / "chat.md")
    assert "**User:** " + PROMPT in (tmp_path / "chat.md").read_text("utf-8")
    other = ChatPage(page.context)
    qtbot.addWidget(other)
    other.set_models([])
    assert other.file_action("load", path)
    for pane in (0, 1):
        x, y = page.transcript.turns[0].panes[pane], other.transcript.turns[0].panes[pane]
        assert len(y.branches) == len(x.branches) and y.active == x.active
        for bx, by in zip(x.branches, y.branches):
            assert by.tokens == bx.tokens and by.agreements == bx.agreements
            assert by.ref_top == bx.ref_top and by.reply == bx.reply and by.summary == bx.summary
    page.graphs.flush()
    other.graphs.flush()
    assert other.graphs.drawn_counts() == page.graphs.drawn_counts()
    assert other.graphs.drawn_flips(1) == page.graphs.drawn_flips(1)
    assert other.panes[1].view.tooltip_html(0, 0) == page.panes[1].view.tooltip_html(0, 0)
    other.shutdown()
    # the graphs export
    assert page.file_action("png", tmp_path / "g.png") and (tmp_path / "g.png").stat().st_size > 0
    assert page.file_action("csv", tmp_path / "g.csv")
    rows = (tmp_path / "g.csv").read_text().splitlines()
    assert len(rows) == 1 + len(_last(page, 0).tokens) + len(_last(page, 1).tokens)


def test_a_failing_pane_does_not_stop_the_other(page, qtbot, monkeypatch):
    backend = page.models.entry(page.pane_keys[1]).loaded.backend
    real = backend.feed
    calls = {"n": 0}

    def failing(ids):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("the device went away")
        return real(ids)

    monkeypatch.setattr(backend, "feed", failing)
    _run(qtbot, page, lambda: page.send(PROMPT))
    ref, broken = _last(page, 0), _last(page, 1)
    assert broken.error == "RuntimeError: the device went away" and broken.reply is None
    assert ref.reply is not None and ref.reply.finish_reason == "end"
    assert "the device went away" in page.panes[1].view.toPlainText()
    assert not page.errors  # a pane's failure is shown in the pane, not as a dialog


def test_stop_ends_every_pane_within_one_token(page, qtbot):
    page.sampling.max_new.setValue(200)
    seen = {}

    class Recording(threading.Event):
        def set(self):  # what each pane had when Stop was pressed
            seen.update({i: len(_last(page, i).tokens) for i in (0, 1)})
            super().set()

    assert page.send("Count from one to two hundred, one number per line.")
    page.cancel.__class__ = Recording  # the session holds this very object
    qtbot.waitUntil(lambda: all(len(_last(page, i).tokens) >= 3 for i in (0, 1)), timeout=120_000)
    page.stop_button.click()
    qtbot.waitUntil(lambda: page.job is None, timeout=60_000)
    for i in (0, 1):
        b = _last(page, i)
        assert b.reply.finish_reason == "cancelled"
        # the token in flight when Stop was pressed is the last one (the
        # snapshot may miss one the worker was just handing over)
        assert len(b.tokens) - seen[i] <= 2
        assert len(b.tokens) < 40


def test_a_language_switch_redraws_footers_and_speed_and_keeps_details_whole(page, qtbot, qapp):
    from qdesk.gui.i18n import Translations

    _run(qtbot, page, lambda: page.send(PROMPT))
    footer = page.panes[1].summary.text()
    assert footer.startswith(f"{len(_last(page, 1).tokens)} tokens")
    assert "tok/s" in page.panes[0].speed.text()
    translations = Translations(qapp)
    try:
        assert translations.apply("zh_CN")
        assert page.panes[1].summary.text().startswith(f"{len(_last(page, 1).tokens)} 个词元")
        assert "词元/秒" in page.panes[0].speed.text()
        assert "tok/s" not in page.panes[0].speed.text()
    finally:
        translations.apply("en")
    assert page.panes[1].summary.text() == footer
    # the live speed has a fixed box (no re-layout per update); the model's
    # details take the rest of the row, and their tooltip holds the whole line
    details = page.panes[1].details
    assert page.panes[1].speed.minimumWidth() == page.panes[1].speed.maximumWidth()
    assert details.toolTip() == details.text() != ""
    assert details.width() >= details.sizeHint().width()  # not cut at 1200 px


def test_hovering_a_token_shows_its_tooltip(page, qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QHelpEvent, QTextCursor
    from PySide6.QtWidgets import QApplication, QToolTip

    _run(qtbot, page, lambda: page.send(PROMPT))
    view = page.panes[1].view
    turn = len(page.transcript.turns) - 1
    index = next(i for i in range(view.token_count(turn)) if view.token_data(turn, i)[0].text.strip())
    start = view._tokens[(turn, index)].start
    cursor = QTextCursor(view.document())
    cursor.setPosition(start + 1)
    pos = view.cursorRect(cursor).center()
    assert view.token_at(pos) == (turn, index)
    event = QHelpEvent(QEvent.Type.ToolTip, pos, view.viewport().mapToGlobal(pos))
    QApplication.sendEvent(view.viewport(), event)
    assert QToolTip.text() == view.tooltip_html(turn, index)
    QToolTip.hideText()
