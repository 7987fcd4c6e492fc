"""The compare page: the offline comparison engine from the GUI.

Choose a reference and the models, a text (held-out English / Chinese, or a
file), the context and the number of windows, and run it as a job (progress,
cancel). It shows the llama.cpp-style table (one column per model, with
uncertainties), the flip rate by the reference's margin, the KLD percentiles,
and quality against size for every model compared against this reference so
far. A second study measures reply lengths over a prompt set. Results save
as JSON (the same content as ``qdesk compare --json``) and as one HTML report
with the plots embedded.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import threading
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QEvent, QIODevice, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from qdesk.core.atomic import write_text_atomic
from qdesk.core.chat.events import SamplingConfig
from qdesk.core.compare.studies import length_study_steps, text_comparison_steps
from qdesk.core.errors import BadInput, QdeskError
from qdesk.gui.script import Wait
from qdesk.gui.widgets.compare_table import CompareTable, divergence_rows
from qdesk.gui.widgets.flip_rate_plot import FlipRatePlot
from qdesk.gui.widgets.kld_percentile_plot import KldPercentilePlot
from qdesk.gui.widgets.quality_size_plot import QualitySizePlot
from qdesk.gui.widgets.reply_graphs import PANE_COLORS
from qdesk.gui.widgets.reply_length_plot import ReplyLengthPlot

log = logging.getLogger(__name__)

TEXTS = ("heldout", "heldout-en", "heldout-zh")
PROMPT_SETS = ("knowledge-en", "knowledge-zh", "reasoning-en", "reasoning-zh",
               "knowledge", "reasoning")
DTYPE_BITS = {"float32": 32.0, "bfloat16": 16.0, "float16": 16.0}


def create_page(context) -> ComparePage:
    return ComparePage(context)


def bits_per_weight(facts) -> float | None:
    q = getattr(facts, "quantization", None) or {}
    bpw = q.get("bits_per_weight") or q.get("bpw")
    if isinstance(bpw, (int, float)):
        return float(bpw)
    return DTYPE_BITS.get(getattr(facts, "dtype", ""))


class ComparePage(QWidget):
    page_key = "compare"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.models = context.models
        self.runner = context.runner
        self.job = None
        self.cancel = threading.Event()
        self.last_error = ""
        self.result = None  # TextComparison
        self.result_models: list[dict] = []
        self.lengths = None  # LengthsDone
        self._done_text = None  # the last outcome's line, made again on a language change
        self.text_file = ""
        self.prompts_file = ""
        self.quality: dict[str, list] = dict(
            context.settings.page_options("compare").get("quality", {}))

        # -- options --
        self.reference = QComboBox()
        self.model_list = QListWidget()
        self.model_list.setMaximumHeight(120)
        self.text = QComboBox()
        self.ctx = QSpinBox()
        self.ctx.setRange(16, 8192)
        self.ctx.setSingleStep(64)
        self.ctx.setValue(256)
        self.chunks = QSpinBox()
        self.chunks.setRange(0, 10000)
        self.chunks.setValue(8)
        self.run_button = QPushButton()
        self.cancel_button = QPushButton()
        self.prompts = QComboBox()
        self.max_new = QSpinBox()
        self.max_new.setRange(1, 4096)
        self.max_new.setValue(64)
        self.lengths_button = QPushButton()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.save_button = QPushButton()
        self.report_button = QPushButton()

        self.form = QFormLayout()
        self.form_labels = [QLabel() for _ in range(5)]
        for label, w in zip(self.form_labels[:2], (self.reference, self.model_list)):
            self.form.addRow(label, w)
        self.text_box = QGroupBox()
        text_form = QFormLayout(self.text_box)
        for label, w in zip(self.form_labels[2:], (self.text, self.ctx, self.chunks)):
            text_form.addRow(label, w)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        text_form.addRow(run_row)
        self.lengths_box = QGroupBox()
        lengths_form = QFormLayout(self.lengths_box)
        self.prompts_label, self.max_new_label = QLabel(), QLabel()
        lengths_form.addRow(self.prompts_label, self.prompts)
        lengths_form.addRow(self.max_new_label, self.max_new)
        lengths_form.addRow(self.lengths_button)
        options = QVBoxLayout()
        options.addLayout(self.form)
        options.addWidget(self.text_box)
        options.addWidget(self.lengths_box)
        options.addWidget(self.progress)
        options.addWidget(self.status)
        options.addStretch(1)
        files = QHBoxLayout()
        files.addWidget(self.save_button)
        files.addWidget(self.report_button)
        options.addLayout(files)
        left = QWidget()
        left.setLayout(options)
        left.setMinimumWidth(220)
        left.setMaximumWidth(260)

        # -- results --
        self.table = CompareTable()
        self.flip_plot = FlipRatePlot()
        self.kld_plot = KldPercentilePlot()
        self.quality_plot = QualitySizePlot()
        plots = QSplitter(Qt.Orientation.Vertical)
        for p in (self.flip_plot, self.kld_plot, self.quality_plot):
            plots.addWidget(p)
        # One legend for the three plots (a model has one colour in all of them).
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("background:white; padding:3px 6px;")
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.setSpacing(0)
        right_layout.addWidget(self.legend)
        right_layout.addWidget(plots, 1)
        divergence = QSplitter(Qt.Orientation.Horizontal)
        divergence.addWidget(self.table)
        divergence.addWidget(right)
        divergence.setStretchFactor(0, 1)
        divergence.setStretchFactor(1, 1)
        # The plots' titles and axes need about 260 px; below that pyqtgraph draws
        # past the widget's edge (cut off at 1024x640). The table scrolls instead.
        right.setMinimumWidth(260)
        divergence.setSizes([600, 380])
        self.lengths_plot = ReplyLengthPlot()
        self.lengths_table = QTableWidget()
        self.lengths_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        lengths = QSplitter(Qt.Orientation.Vertical)
        lengths.addWidget(self.lengths_plot)
        lengths.addWidget(self.lengths_table)
        self.tabs = QTabWidget()
        self.tabs.addTab(divergence, "")
        self.tabs.addTab(lengths, "")

        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(left)
        layout.addWidget(self.tabs, 1)

        self.run_button.clicked.connect(lambda: self.run_divergence())
        self.cancel_button.clicked.connect(self.cancel_action)
        self.lengths_button.clicked.connect(lambda: self.run_lengths())
        self.text.activated.connect(self._text_chosen)
        self.prompts.activated.connect(self._prompts_chosen)
        self.reference.activated.connect(lambda _=0: self._fill_models(keep=True))
        self.save_button.clicked.connect(lambda: self._ask("json"))
        self.report_button.clicked.connect(lambda: self._ask("html"))
        self.models.changed.connect(lambda _k: self._fill_models(keep=True))
        self.models.removed.connect(lambda _k: self._fill_models(keep=True))
        self._register_script_actions()
        self.retranslate()
        self._fill_models(keep=False)
        self._update_buttons()

    # -- the window's contract --
    def page_title(self) -> str:
        return self.tr("Compare")

    def run_action(self) -> None:
        self.run_divergence()

    def cancel_action(self) -> None:
        self.cancel.set()  # a reply in flight ends at its next token
        if self.job is not None:
            self.job.cancel()

    def save_state(self) -> None:
        self.context.settings.set_page_options("compare", {"quality": self.quality})

    # -- texts --
    def retranslate(self) -> None:
        if getattr(self, "_done_text", None) is not None and self.job is None:
            self.status.setText(self._done_text())  # the last outcome, in the new language
        for label, (text, tip) in zip(self.form_labels, (
            (self.tr("Reference"), self.tr("The model the others are measured against.")),
            (self.tr("Models"), self.tr("The models to compare (they must share its vocabulary).")),
            (self.tr("Text"), self.tr("Held-out prose (never used for calibration) or your file.")),
            (self.tr("Context"), self.tr("Tokens per window; the second half of each is scored.")),
            (self.tr("Windows"), self.tr("At most this many windows (0 = the whole text).")),
        )):
            label.setText(text)
            label.setToolTip(tip)
        self.text_box.setTitle(self.tr("Divergence on a text"))
        self.lengths_box.setTitle(self.tr("Reply lengths on prompts"))
        self.prompts_label.setText(self.tr("Prompts"))
        self.max_new_label.setText(self.tr("Max new tokens"))
        self.run_button.setText(self.tr("Run"))
        self.cancel_button.setText(self.tr("Cancel"))
        self.lengths_button.setText(self.tr("Run the reply-length study"))
        self.lengths_button.setToolTip(self.tr(
            "Every model answers every prompt (greedy); mean and median reply tokens with "
            "bootstrap 95% intervals, the paired difference to the reference, the share that "
            "hits the limit, and accuracy on reasoning prompts."))
        self.save_button.setText(self.tr("Save JSON…"))
        self.report_button.setText(self.tr("Report HTML…"))
        self.report_button.setToolTip(self.tr("One HTML file: the tables and the plots."))
        self.tabs.setTabText(0, self.tr("Divergence"))
        self.tabs.setTabText(1, self.tr("Reply lengths"))
        names = {"heldout": self.tr("held-out English + Chinese"),
                 "heldout-en": self.tr("held-out English"),
                 "heldout-zh": self.tr("held-out Chinese")}
        self._fill_choice(self.text, [(names[t], t) for t in TEXTS], self.text_file)
        self._fill_choice(self.prompts, [(p, p) for p in PROMPT_SETS], self.prompts_file)
        for p in (self.flip_plot, self.kld_plot, self.quality_plot, self.lengths_plot):
            p.retranslate()

    def _fill_choice(self, combo: QComboBox, items, file: str) -> None:
        current = combo.currentData()
        combo.clear()
        for label, data in items:
            combo.addItem(label, data)
        if file:
            combo.addItem(Path(file).name, file)
        combo.addItem(self.tr("A file…"), "?file")
        combo.setCurrentIndex(max(0, combo.findData(current)))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # -- choices --
    def _fill_models(self, keep: bool) -> None:
        ready = self.models.ready()
        ref_key = self.reference.currentData() if keep else None
        checked = self.checked_keys() if keep else []
        self.reference.clear()
        for e in ready:
            self.reference.addItem(e.name, e.key)
        if ref_key:
            self.reference.setCurrentIndex(max(0, self.reference.findData(ref_key)))
        ref_key = self.reference.currentData()
        self.model_list.clear()
        for e in ready:
            if e.key == ref_key:
                continue
            item = QListWidgetItem(e.name)
            item.setData(Qt.ItemDataRole.UserRole, e.key)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = e.key in checked if keep and checked else True
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.model_list.addItem(item)
        self._draw_quality()

    def checked_keys(self) -> list[str]:
        out = []
        for i in range(self.model_list.count()):
            item = self.model_list.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(Qt.ItemDataRole.UserRole))
        return out

    def set_choice(self, reference: str, models: list[str]) -> None:
        self.reference.setCurrentIndex(max(0, self.reference.findData(reference)))
        self._fill_models(keep=True)
        for i in range(self.model_list.count()):
            item = self.model_list.item(i)
            on = item.data(Qt.ItemDataRole.UserRole) in models
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def _text_chosen(self) -> None:
        if self.text.currentData() == "?file":
            path, _ = QFileDialog.getOpenFileName(self, self.tr("A UTF-8 text file"), "",
                                                  "Text (*.txt *.md);;All (*)")
            if path:
                self.text_file = path
            self.retranslate()
            self.text.setCurrentIndex(max(0, self.text.findData(self.text_file or "heldout")))

    def _prompts_chosen(self) -> None:
        if self.prompts.currentData() == "?file":
            path, _ = QFileDialog.getOpenFileName(
                self, self.tr("Prompts: one a line, or .jsonl"), "", "Prompts (*.txt *.jsonl)")
            if path:
                self.prompts_file = path
            self.retranslate()
            self.prompts.setCurrentIndex(max(0, self.prompts.findData(
                self.prompts_file or PROMPT_SETS[0])))

    # -- running --
    def _chosen(self):
        ref_key = self.reference.currentData()
        ref = self.models.entry(ref_key) if ref_key else None
        keys = self.checked_keys()
        if ref is None or ref.loaded is None:
            raise BadInput(self.tr("Choose a loaded reference model."))
        if not keys:
            raise BadInput(self.tr("Choose at least one model to compare."))
        fp = ref.loaded.backend.tokenizer.fingerprint()
        entries, skipped = [], []
        for k in keys:
            e = self.models.entry(k)
            if e is None or e.loaded is None:
                continue
            if e.loaded.backend.tokenizer.fingerprint() != fp:
                skipped.append(e.name)
            else:
                entries.append(e)
        if not entries:
            raise BadInput(self.tr("No chosen model shares the reference's vocabulary."))
        return ref, entries, skipped

    def run_divergence(self) -> bool:
        if self.job is not None:
            return False
        try:
            ref, entries, skipped = self._chosen()
        except QdeskError as e:
            return self._refuse(str(e))
        text = self.text.currentData()
        ctx, chunks = self.ctx.value(), self.chunks.value() or None
        ref_b, backends = ref.loaded.backend, [e.loaded.backend for e in entries]
        cancel = self.cancel = threading.Event()
        self.result_models = [self._model_json(e, "reference" if e is ref else "model")
                              for e in [ref, *entries]]

        def steps():
            return (yield from text_comparison_steps(ref_b, backends, text, ctx, chunks, cancel))

        note = (self.tr("Skipped (another vocabulary): {names}").format(names=", ".join(skipped))
                if skipped else "")
        return self._start(self.tr("Comparing with {name}").format(name=ref.name), steps,
                           [ref.key] + [e.key for e in entries], self._divergence_done, note)

    def run_lengths(self) -> bool:
        if self.job is not None:
            return False
        try:
            ref, entries, _ = self._chosen()
        except QdeskError as e:
            return self._refuse(str(e))
        prompts = self.prompts.currentData()
        sampling = SamplingConfig(max_new_tokens=self.max_new.value())
        backends = [ref.loaded.backend] + [e.loaded.backend for e in entries]
        cancel = self.cancel = threading.Event()

        def steps():
            return (yield from length_study_steps(backends, prompts, sampling, 1, cancel))

        return self._start(self.tr("Reply lengths"), steps,
                           [ref.key] + [e.key for e in entries], self._lengths_done, "")

    def _start(self, title, steps, keys, done, note) -> bool:
        self.last_error = ""
        self.job = self.runner.start(
            title, steps, models=tuple(keys), on_event=self._progressed, on_done=done,
            on_failed=self._failed, on_cancelled=self._cancelled, throttle_ms=100,
        )
        if self.job is None:
            self.last_error = self.tr("a model is busy")
            return False
        self.job.set_status(title)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self._done_text = None
        self.status.setText(note)
        self._update_buttons()
        return True

    def _refuse(self, message: str) -> bool:
        self.last_error = message
        self.runner.show_error(self.tr("Compare"), message)
        return False

    def _progressed(self, ev) -> None:
        total = getattr(ev, "total", 0)
        done = ev.index + 1 if hasattr(ev, "index") else getattr(ev, "done", 0)
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            what = self.tr("window") if hasattr(ev, "index") else self.tr("reply")
            text = f"{what} {done}/{total}"
            self.status.setText(text)
            if self.job is not None:
                self.job.set_status(f"{self.job.title}: {text}", done, total)

    def _finished(self) -> None:
        self.job = None
        self.progress.setVisible(False)
        self._update_buttons()

    def _failed(self, message: str) -> None:
        self.last_error = message
        self._done_text = None
        self.status.setText(message)
        self._finished()

    def _cancelled(self) -> None:
        self._done_text = None
        self.status.setText(self.tr("Cancelled."))
        self._finished()

    def _divergence_done(self, result) -> None:
        self._finished()
        self.result = result
        self.show_divergence(result)
        ref_name = self.result_models[0]["name"]
        points = {p[0]: p for p in self.quality.get(ref_name, [])}
        for m, r in zip(self.result_models[1:], result.reports):
            if m.get("bits_per_weight") is not None:
                points[m["name"]] = [m["name"], m["bits_per_weight"], r.mean_kld]
        self.quality[ref_name] = list(points.values())
        self.save_state()
        self._draw_quality()
        r0 = result.reports[0]
        self._done_text = lambda: self.tr("{n} windows of {ctx} tokens, {t} tokens scored.").format(
            n=r0.windows, ctx=r0.ctx, t=r0.tokens)
        self.status.setText(self._done_text())
        self._update_buttons()  # Save/Report: _finished ran before the result was kept
        self.tabs.setCurrentIndex(0)

    def model_colors(self) -> dict[str, str]:
        reports = self.result.reports if self.result is not None else ()
        return {r.model: PANE_COLORS[(m + 1) % len(PANE_COLORS)] for m, r in enumerate(reports)}

    def show_divergence(self, result) -> None:
        self.table.show_reports(result.reports)
        self.flip_plot.show_reports(result.reports)
        self.kld_plot.show_reports(result.reports)
        self.legend.setText("&nbsp;&nbsp;&nbsp;".join(
            f"<span style='color:{c}'>■</span> {html.escape(name)}"
            for name, c in self.model_colors().items()))

    def _draw_quality(self) -> None:
        ref = self.models.entry(self.reference.currentData() or "")
        name = ref.name if ref is not None else ""
        names = {m["name"]: m["model"] for m in self.result_models}
        colors = {n: self.model_colors().get(model) for n, model in names.items()}
        self.quality_plot.show_points([tuple(p) for p in self.quality.get(name, [])],
                                      {k: v for k, v in colors.items() if v})

    def _lengths_done(self, done) -> None:
        self._finished()
        self.lengths = done
        self.lengths_plot.show_stats(done.stats)
        self._fill_lengths_table(done)
        self.tabs.setCurrentIndex(1)
        self._done_text = lambda: self.tr("{n} replies.").format(n=len(done.records))
        self.status.setText(self._done_text())
        self._update_buttons()

    def _fill_lengths_table(self, done) -> None:
        heads = [self.tr("model"), self.tr("category"), self.tr("replies"),
                 self.tr("mean tokens [95%]"), self.tr("median [95%]"),
                 self.tr("minus reference [95%]"), self.tr("at limit"), self.tr("accuracy [95%]")]
        t = self.lengths_table
        t.clear()
        t.setColumnCount(len(heads))
        t.setHorizontalHeaderLabels(heads)
        t.setRowCount(len(done.stats))
        for row, s in enumerate(done.stats):
            cells = [s.model, s.category, str(s.replies), _iv(s.mean_tokens, ".1f"),
                     _iv(s.median_tokens, ".1f"),
                     "–" if s.diff_to_reference is None else _iv(s.diff_to_reference, "+.1f"),
                     f"{100 * s.hit_limit_share:.0f}%",
                     "–" if s.accuracy is None else _iv(s.accuracy, ".0%")]
            for col, text in enumerate(cells):
                t.setItem(row, col, QTableWidgetItem(text))
        t.resizeColumnsToContents()

    def _model_json(self, entry, role: str) -> dict:
        f = entry.facts
        return {"model": f.name, "name": entry.name, "backend": f.backend, "device": f.device,
                "dtype": f.dtype, "role": role, "bits_per_weight": bits_per_weight(f)}

    def _update_buttons(self) -> None:
        running = self.job is not None
        self.run_button.setEnabled(not running)
        self.lengths_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(not running and (self.result or self.lengths) is not None)
        self.report_button.setEnabled(self.save_button.isEnabled())

    # -- saving --
    def results_json(self) -> dict:
        out = {}
        if self.result is not None:
            out["divergence"] = {**self.result.to_json(), "loaded": self.result_models}
        if self.lengths is not None:
            out["lengths"] = self.lengths.to_json()
        return out

    def _ask(self, what: str) -> None:
        pattern = "JSON (*.json)" if what == "json" else "HTML (*.html)"
        path, _ = QFileDialog.getSaveFileName(self, self.tr("Save the results"), "", pattern)
        if path:
            self.save(what, Path(path))

    def save(self, what: str, path: Path) -> bool:
        try:
            if not self.results_json():
                raise BadInput(self.tr("There are no results yet."))
            text = (json.dumps(self.results_json(), ensure_ascii=False, indent=1) if what == "json"
                    else self.report_html())
            write_text_atomic(Path(path), text)
        except QdeskError as e:
            self.runner.show_error(self.tr("Compare"), str(e))
            return False
        except OSError as e:
            self.runner.show_error(self.tr("Compare"), f"{path}: {e.strerror or e}")
            return False
        self._done_text = None
        self.status.setText(self.tr("Wrote {path}").format(path=path))
        return True

    def report_html(self) -> str:
        parts = ["<!doctype html><meta charset='utf-8'><title>qdesk comparison</title>",
                 "<style>body{font-family:sans-serif;margin:2em} td,th{padding:2px 8px;"
                 "border-bottom:1px solid #ddd;text-align:right} th:first-child,td:first-child"
                 "{text-align:left}</style>", "<h1>qdesk comparison</h1>"]
        if self.result is not None:
            r0 = self.result.reports[0]
            parts.append(f"<h2>Divergence from {html.escape(r0.reference)}</h2><p>"
                         f"{html.escape(self.result.text)}: {r0.windows} windows of {r0.ctx} "
                         f"tokens, {r0.tokens} scored positions per model.</p>")
            rows = [divergence_rows(r) for r in self.result.reports]
            parts.append("<table><tr><th></th>" + "".join(
                f"<th>{html.escape(r.model)}</th>" for r in self.result.reports) + "</tr>")
            for i, (label, _) in enumerate(rows[0]):
                parts.append(f"<tr><td>{html.escape(label)}</td>" + "".join(
                    f"<td>{html.escape(r[i][1])}</td>" for r in rows) + "</tr>")
            parts.append("</table>")
            for plot in (self.flip_plot, self.kld_plot, self.quality_plot):
                parts.append(_png_img(plot))
        if self.lengths is not None:
            parts.append(f"<h2>Reply lengths: {html.escape(self.lengths.prompt_set)}</h2>")
            parts.append(_png_img(self.lengths_plot))
            parts.append("<table><tr><th>model</th><th>category</th><th>mean [95%]</th>"
                         "<th>median [95%]</th><th>minus reference</th><th>at limit</th>"
                         "<th>accuracy</th></tr>")
            for s in self.lengths.stats:
                diff = "–" if s.diff_to_reference is None else _iv(s.diff_to_reference, "+.1f")
                acc = "–" if s.accuracy is None else _iv(s.accuracy, ".0%")
                parts.append(
                    f"<tr><td>{html.escape(s.model)}</td><td>{html.escape(s.category)}</td>"
                    f"<td>{_iv(s.mean_tokens, '.1f')}</td><td>{_iv(s.median_tokens, '.1f')}</td>"
                    f"<td>{diff}</td><td>{100 * s.hit_limit_share:.0f}%</td><td>{acc}</td></tr>")
            parts.append("</table>")
        return "\n".join(parts) + "\n"

    # -- screenshot mode --
    def _register_script_actions(self) -> None:
        reg = self.context.script.register
        reg("compare.set", self._script_set,
            "compare.set reference=MODEL models=A,B text=heldout ctx=N chunks=N prompts=SET "
            "max_new_tokens=N")
        reg("compare.run", self._script_run, "compare.run: run the divergence, wait")
        reg("compare.lengths", self._script_lengths, "compare.lengths: run the reply lengths, wait")
        reg("compare.tab", lambda name: self.tabs.setCurrentIndex(
            {"divergence": 0, "lengths": 1}[name]), "compare.tab divergence|lengths")

    def _key(self, text: str) -> str:
        for e in self.models.entries():
            if text in (e.key, e.text, e.name):
                return e.key
        raise BadInput(f"compare.set: {text} is not loaded")

    def _script_set(self, reference: str = "", models: str = "", text: str = "",
                    ctx: str = "", chunks: str = "", prompts: str = "",
                    max_new_tokens: str = "") -> None:
        if reference or models:
            ref = self._key(reference) if reference else self.reference.currentData()
            self.set_choice(ref, [self._key(m) for m in models.split(",") if m])
        if text:
            if text not in TEXTS:
                self.text_file = text
                self.retranslate()
            self.text.setCurrentIndex(self.text.findData(text))
        if prompts:
            if prompts not in PROMPT_SETS:
                self.prompts_file = prompts
                self.retranslate()
            self.prompts.setCurrentIndex(self.prompts.findData(prompts))
        if ctx:
            self.ctx.setValue(int(ctx))
        if chunks:
            self.chunks.setValue(int(chunks))
        if max_new_tokens:
            self.max_new.setValue(int(max_new_tokens))

    def _wait(self, what: str) -> Wait:
        return Wait(until=lambda: self.job is None, what=what,
                    failed=lambda: self.last_error or None)

    def _script_run(self) -> Wait:
        if not self.run_divergence():
            raise BadInput(f"compare.run: {self.last_error}")
        return self._wait("the comparison")

    def _script_lengths(self) -> Wait:
        if not self.run_lengths():
            raise BadInput(f"compare.lengths: {self.last_error}")
        return self._wait("the reply-length study")


def _iv(iv, fmt: str) -> str:
    return f"{iv.value:{fmt}} [{iv.lo:{fmt}}, {iv.hi:{fmt}}]"


def _png_img(widget) -> str:
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    widget.grab().save(buf, "PNG")
    encoded = base64.b64encode(bytes(data)).decode("ascii")
    return f"<p><img alt='' src='data:image/png;base64,{encoded}'></p>"
