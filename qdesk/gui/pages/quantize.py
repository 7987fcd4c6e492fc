"""The Quantize page: options, what they will give (before Run), live progress
(bar, ETA, current layer, per-layer error bars coloured by bits, memory), Cancel
within one layer, and the summary with the held-out self-check.

The model is the sidebar's selection (a transformers model that is not
quantized). The job is core's ``quantize_steps`` run by the job runner; the
page only reads its events. After a run the job has changed the source
model's weights in place, so the page reloads the source from disk and opens
the new checkpoint from disk (which also proves it loads).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from qdesk.core.errors import BadInput, OutOfResources, QdeskError
from qdesk.core.models import available_memory_bytes
from qdesk.core.paths import data_dir
from qdesk.core.quant.events import (
    BlockTuned,
    CalibrationProgress,
    LayerKept,
    LayerQuantized,
    LayerSensitivity,
    QuantizeSummary,
    SavingCheckpoint,
    TuningProgress,
)
from qdesk.core.quant.predict import model_shapes, predict, resolve_plan
from qdesk.gui.formatting import duration, mib
from qdesk.gui.model_registry import READY
from qdesk.gui.quantize_request import (
    GROUP_SIZES,
    QuantizeOptions,
    check_before_run,
    quantize_job,
)
from qdesk.gui.script import Wait
from qdesk.gui.widgets.layer_error_plot import LayerErrorPlot
from qdesk.gui.widgets.memory_status import process_memory_bytes
from qdesk.gui.widgets.plan_table import PlanRow, PlanTable
from qdesk.gui.widgets.quantize_options_form import QuantizeOptionsForm
from qdesk.gui.widgets.quantize_summary import QuantizeSummaryView
from qdesk.gui.widgets.sensitivity_plot import SensitivityPlot
from qdesk.gui.widgets.settings_dialog import OUTPUT_DIR_KEY

REDRAW_MS = 100


class QuantizePage(QWidget):
    page_key = "quantize"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.models = context.models
        self.runner = context.runner
        self.model_key = ""
        self._shapes: dict[str, object] = {}
        self._shapes_jobs: set[str] = set()
        self._suggested_output = ""  # the output the page proposed (kept only while unedited)
        self.job = None
        self.source_key = ""
        self.new_key = ""
        self.summary = None
        self.check = None
        self.events: list = []  # every event of the last run, in arrival order
        self._started = 0.0
        self._layers_started = 0.0
        self._done_numel = 0
        self._total_numel = 0
        self._status = ""
        self.out: Path | None = None
        self._progress = (0, 0)  # (layers done, of)
        self._dirty = False

        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.form = QuantizeOptionsForm()
        self.prediction = QLabel()
        self.prediction.setWordWrap(True)
        self.prediction.setObjectName("quantize-prediction")
        self.run_button = QPushButton()
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton()
        self.cancel_button.setEnabled(False)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 6, 0)
        left_layout.addWidget(self.model_label)
        left_layout.addWidget(self.form, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(left)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(340)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button, 1)
        run_row.addWidget(self.cancel_button, 1)
        left_column = QWidget()
        lc = QVBoxLayout(left_column)
        lc.setContentsMargins(0, 0, 0, 0)
        lc.addWidget(scroll, 1)
        lc.addWidget(self.prediction)
        lc.addLayout(run_row)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.progress_label = QLabel()
        self.progress_label.setWordWrap(True)
        self.error_plot = LayerErrorPlot()
        self.plan_table = PlanTable()
        self.sensitivity_plot = SensitivityPlot()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.error_plot, "")
        self.tabs.addTab(self.plan_table, "")
        self.tabs.addTab(self.sensitivity_plot, "")
        self.summary_view = QuantizeSummaryView()
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(6, 0, 0, 0)
        rl.addWidget(self.progress)
        rl.addWidget(self.progress_label)
        rl.addWidget(self.tabs, 1)
        rl.addWidget(self.summary_view)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("quantize-splitter")
        self.splitter.addWidget(left_column)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([380, 620])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)

        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.flush)

        self.form.changed.connect(self._options_changed)
        self.form.preview_requested.connect(self._preview)
        self.plan_table.edited.connect(self._table_edited)
        self.run_button.clicked.connect(self.run_action)
        self.cancel_button.clicked.connect(self.cancel_action)
        self.summary_view.chat_clicked.connect(self._chat)
        self.summary_view.export_clicked.connect(self._export)
        self.summary_view.open_folder_clicked.connect(self._open_folder)
        self.models.selection_changed.connect(lambda _key: self._model_changed())
        self.models.changed.connect(self._entry_changed)
        self.models.removed.connect(self._entry_removed)
        self.runner.job_finished.connect(lambda _job: self._retry_shapes())

        s = context.script
        s.register("quantize.set", self._script_set, "quantize.set NAME=VALUE ... (qdesk quantize's options)")
        s.register("quantize.run", self._script_run, "quantize.run (waits until it ends)")
        s.register("quantize.start", self._script_start, "quantize.start (does not wait)")
        s.register("quantize.wait-layers", self._script_wait_layers, "quantize.wait-layers N")
        s.register("quantize.cancel", self._script_cancel, "quantize.cancel (waits until it stopped)")
        s.register("quantize.tab", self._script_tab, "quantize.tab error|plan|sensitivity")

        saved = context.settings.page_options(self.page_key)
        try:
            options = QuantizeOptions.from_mapping({k: v for k, v in saved.items() if k != "output"})
        except QdeskError:
            options = QuantizeOptions()
        self.form.set_options(options)
        self.retranslate()
        self._model_changed()

    # -- texts -------------------------------------------------------------------------------
    def page_title(self) -> str:
        return self.tr("Quantize")

    def retranslate(self) -> None:
        self.run_button.setText(self.tr("Run"))
        self.run_button.setToolTip(self.tr("Quantize the model with these options (Ctrl+R)"))
        self.cancel_button.setText(self.tr("Cancel"))
        self.cancel_button.setToolTip(self.tr("Stop after the current layer; the model is restored "
                                              "and nothing is written (Esc)"))
        self.tabs.setTabText(0, self.tr("Error per layer"))
        self.tabs.setTabText(1, self.tr("Plan"))
        self.tabs.setTabText(2, self.tr("Sensitivity"))
        self.progress.setToolTip(self.tr("Progress over the Linear layers"))
        self._show_model()
        if self.job is not None:
            last = next((e for e in reversed(self.events) if self._status_of(e)), None)
            self._status = self._status_of(last) if last is not None else self.tr(
                "preparing the calibration set…")
            self._dirty = True  # the status bar's line too, at the next flush
        self._update_prediction(force=True)
        self._show_progress()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # -- the model ---------------------------------------------------------------------------
    def entry(self):
        return self.models.entry(self.model_key)

    def _suitable(self, entry) -> str:
        """'' if ``entry`` can be quantized, else why not."""
        if entry is None:
            return self.tr("Select a model in the sidebar (the demo model works offline).")
        if entry.state != READY:
            return self.tr("{name} is not loaded yet.").format(name=entry.name)
        if entry.facts.backend != "hf" or entry.loaded.model is None:
            return self.tr("{name} runs on llama.cpp; quantizing needs the transformers backend "
                           "(load it with backend transformers).").format(name=entry.name)
        if entry.is_quantized:
            return self.tr("{name} is already quantized; quantize its original model.").format(
                name=entry.name)
        return ""

    def _model_changed(self) -> None:
        if self.job is not None:
            return  # the running job keeps its model
        selected = self.models.selected()
        self.model_key = selected.key if selected is not None else ""
        entry = self.entry()
        if not self._suitable(entry):
            self._ensure_shapes(entry.key)
        self._show_model()
        self._apply_shapes()
        self._suggest_output()
        self._update_prediction()

    def _entry_changed(self, key: str) -> None:
        if key == self.model_key:
            self._model_changed()

    def _entry_removed(self, key: str) -> None:
        self._shapes.pop(key, None)
        if key == self.model_key:
            self._model_changed()

    def _show_model(self) -> None:
        entry = self.entry()
        why = self._suitable(entry)
        if why:
            self.model_label.setText(why)
            self.model_label.setStyleSheet("color: #9a6700;")
        else:
            f = entry.facts
            self.model_label.setText(self.tr("Model: <b>{name}</b> · {params}M parameters · {layers} "
                                             "layers · {dtype} on {device}").format(
                name=entry.name, params=f"{f.parameters / 1e6:,.0f}", layers=f.layers,
                dtype=f.dtype, device=f.device))
            self.model_label.setStyleSheet("")
        self.run_button.setEnabled(not why and self.job is None)

    def _ensure_shapes(self, key: str) -> None:
        if key in self._shapes or key in self._shapes_jobs:
            return
        entry = self.models.entry(key)
        loaded = entry.loaded
        # A read-only look (shapes, no copies): it holds no model, so a page the
        # user turns to right after a load (Export, Chat) is not refused as "busy".
        # The quantize run itself waits for these shapes (run_action).
        job = self.runner.start_call(
            lambda: self.tr("Measuring {name}").format(name=entry.name),
            lambda report: model_shapes(loaded),
            on_done=lambda shapes: self._shapes_ready(key, shapes),
            on_failed=lambda message: self._shapes_jobs.discard(key),
            on_cancelled=lambda: self._shapes_jobs.discard(key),
        )
        if job is not None:
            self._shapes_jobs.add(key)

    def _retry_shapes(self) -> None:
        entry = self.entry()
        if self.job is None and entry is not None and not self._suitable(entry):
            self._ensure_shapes(entry.key)

    def _shapes_ready(self, key: str, shapes) -> None:
        self._shapes_jobs.discard(key)
        if self.models.entry(key) is None:
            return
        self._shapes[key] = shapes
        if key == self.model_key:
            self._apply_shapes()
            self._update_prediction()

    def shapes(self):
        return self._shapes.get(self.model_key)

    def _apply_shapes(self) -> None:
        shapes = self.shapes()
        if shapes is None:
            if self.summary is None:
                self.error_plot.reset([])
            self.plan_table.set_rows([], [-1])
            return
        self.form.set_widths({lin.in_features for lin in shapes.linears})
        if self.form.plan.currentData() != "custom":  # the table is the user's (or the search's)
            self._fill_table()
        if self.summary is None:  # the plots keep a finished run's results until the next run
            self.error_plot.reset([lin.name for lin in shapes.linears])
            self.sensitivity_plot.reset([lin.name for lin in shapes.linears])

    # -- options and prediction ----------------------------------------------------------------
    def _options_changed(self) -> None:
        if self.job is not None:
            return
        if self.form.plan.currentData() != "custom":
            self._fill_table()
        self._suggest_output()
        self._update_prediction()

    def _suggest_output(self) -> None:
        entry = self.entry()
        if entry is None or self.form.output.text().strip() not in ("", self._suggested_output):
            return  # the user chose a folder: keep it
        try:
            o = self.form.options()
        except QdeskError:
            return
        parent = Path(str(self.context.settings.value(OUTPUT_DIR_KEY, "") or "")
                      or data_dir() / "quantized")
        base = re.sub(r"[^\w.-]+", "-", entry.name.split(" ")[0]).strip("-") or "model"
        g = "ch" if o.group_size == -1 else str(o.group_size)
        name = f"{base}-{o.method}{o.bits}-g{g}" + ("" if o.is_symmetric else "-asym")
        candidate, n = parent / name, 2
        while candidate.exists():
            candidate, n = parent / f"{name}-{n}", n + 1
        self._suggested_output = str(candidate)
        self.form.output.blockSignals(True)
        self.form.output.setText(self._suggested_output)
        self.form.output.blockSignals(False)

    def _table_edited(self) -> None:
        self.form.blockSignals(True)
        self.form.set_custom_plan()
        self.form.blockSignals(False)
        self._update_prediction()

    def _fill_table(self) -> None:
        shapes = self.shapes()
        if shapes is None:
            return
        try:
            options = self.form.options()
            config = options.config()
            configs = resolve_plan(shapes, config, options.plan_object())
        except QdeskError:
            return
        last = {r.name: r.error for r in self.plan_table.rows()}  # the last run's errors stay
        rows = []
        for lin in shapes.linears:
            c = configs.get(lin.name)
            rows.append(PlanRow(lin.name, lin.in_features, c is None,
                                c.bits if c else config.bits,
                                c.group_size if c else config.group_size,
                                c.method if c else config.method, last.get(lin.name)))
        good, _ = shapes.divisors(GROUP_SIZES)
        self.plan_table.set_rows(rows, good)

    def current_plan(self, options: QuantizeOptions):
        return options.plan_object(self.plan_table.rules(options.config()))

    def predicted(self):
        """The prediction for the form's options (BadInput when they cannot run)."""
        shapes = self.shapes()
        if shapes is None:
            return None
        options = self.form.options()
        return predict(shapes, options.config(), self.current_plan(options),
                       options.calib_samples, options.calib_tokens)

    def _update_prediction(self, force: bool = False) -> None:
        if self.job is not None and not force:
            return  # the options are frozen while the job runs
        if self._suitable(self.entry()):
            self.prediction.setText("")
            return
        try:
            p = self.predicted()
        except QdeskError as e:
            self.prediction.setText(str(e))
            self.prediction.setStyleSheet("color: #b00020;")
            return
        if p is None:
            self.prediction.setText(self.tr("Measuring the model…"))
            self.prediction.setStyleSheet("color: palette(mid);")
            return
        device = self.entry().facts.device
        free = available_memory_bytes(device)
        bpw = (self.tr("at most {bpw}") if not p.exact else "{bpw}").format(bpw=f"{p.bits_per_weight:.3f}")
        text = self.tr("Predicted: <b>{bpw}</b> bits per weight · output about <b>{size}</b> · "
                       "about <b>{time}</b> · job memory {mem} besides the model ({free} free)").format(
            bpw=bpw, size=mib(p.output_bytes), time=duration(p.seconds), mem=mib(p.memory_bytes),
            free=mib(free))
        self.prediction.setText(text)
        self.prediction.setStyleSheet("color: #b00020;" if p.memory_bytes > free else "")

    def _preview(self) -> None:
        from qdesk.core.quant.preview import calibration_preview
        from qdesk.gui.widgets.text_preview_dialog import TextPreviewDialog

        entry = self.entry()
        if self._suitable(entry):
            self.runner.show_error(self.tr("No model"), self._suitable(entry))
            return
        try:
            o = self.form.options()
        except QdeskError as e:
            self.runner.show_error(self.tr("Calibration preview"), str(e))
            return
        loaded = entry.loaded
        tokens = min(o.calib_tokens, 256)

        def show(texts: list[str]) -> None:
            heading = self.tr("Three samples of “{set}” ({tokens} tokens each, seed {seed}); the "
                              "run draws {n} such samples of {t} tokens.").format(
                set=o.calib, tokens=tokens, seed=o.seed, n=o.calib_samples, t=o.calib_tokens)
            dialog = TextPreviewDialog(self.tr("Calibration preview"), heading, texts, self)
            self.preview_dialog = dialog
            dialog.open()

        self.runner.start_call(
            lambda: self.tr("Preparing a calibration preview"),
            lambda report: calibration_preview(o.calib, loaded.hf_tokenizer, tokens, o.seed,
                                               o.chat_template, loaded.model),
            models=(entry.key,), on_done=show)

    # -- running ------------------------------------------------------------------------------
    def run_action(self) -> bool:
        """Start the job; False (after one dialog with the reason) when it cannot."""
        if self.job is not None:
            return False
        entry = self.entry()
        why = self._suitable(entry)
        title = self.tr("Cannot quantize")
        if why:
            self.runner.show_error(title, why)
            return False
        shapes = self.shapes()
        if shapes is None:
            self.runner.show_error(title, self.tr("The model is still being measured; try again "
                                                  "in a moment."))
            return False
        try:
            options = self.form.options()
            if options.output and options.output == self._suggested_output:
                Path(options.output).parent.mkdir(parents=True, exist_ok=True)
            plan = self.current_plan(options)
            p = predict(shapes, options.config(), plan, options.calib_samples, options.calib_tokens)
            out = check_before_run(options)
            free = available_memory_bytes(entry.facts.device)
            if p.memory_bytes > free:
                raise OutOfResources(
                    self.tr("quantizing needs about {need} of {device} memory besides the model "
                            "and {free} is free (use fewer calibration samples or tokens)").format(
                        need=mib(p.memory_bytes), device=entry.facts.device, free=mib(free)))
        except QdeskError as e:
            self.runner.show_error(title, str(e))
            return False
        loaded = entry.loaded
        job = self.runner.start(
            lambda: self.tr("Quantizing {name}").format(name=entry.name),
            lambda: quantize_job(loaded, options, plan, out),
            models=(entry.key,),
            on_event=self._on_event,
            on_done=self._on_done,
            on_failed=self._on_failed,
            on_cancelled=self._on_cancelled,
            throttle_ms=100,  # events in batches; the page redraws on its own timer
        )
        if job is None:
            return False
        self.context.settings.set_page_options(self.page_key, options.to_json())
        self.job = job
        self.source_key = entry.key
        self.new_key = ""
        self.out = out
        self.summary = self.check = None
        self.events = []
        self._started = time.monotonic()
        self._layers_started = 0.0
        self._done_numel = 0
        self._total_numel = sum(lin.numel for lin in shapes.linears)
        self._status = self.tr("preparing the calibration set…")
        self.error_plot.reset([lin.name for lin in shapes.linears])
        self.sensitivity_plot.reset([lin.name for lin in shapes.linears])
        self.plan_table.clear_errors()
        if plan.sensitivity:
            self.tabs.setCurrentWidget(self.sensitivity_plot)
        self.progress.setRange(0, len(shapes.linears))
        self.progress.setValue(0)
        self._progress = (0, len(shapes.linears))
        self.summary_view.clear("running")
        self._set_running(True)
        self._timer.start()
        self._show_progress()
        return True

    def cancel_action(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._status = self.tr("cancelling after this layer…")
            self._show_progress()

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.plan_table.view.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.run_button.setEnabled(not running and not self._suitable(self.entry()))

    def _on_event(self, event) -> None:
        self.events.append(event)
        self._status = self._status_of(event) or self._status
        if isinstance(event, LayerSensitivity):
            self.sensitivity_plot.add(event.name, event.errors)
        elif isinstance(event, LayerQuantized):
            if not self._layers_started:
                self._layers_started = time.monotonic()
            self.error_plot.set_layer(event.name, event.rel_error, event.bits)
            self.plan_table.set_error(event.name, event.rel_error, event.bits)
            self._done_numel += self._numel(event.name)
            self._progress = (event.index, event.total)
        elif isinstance(event, LayerKept):
            self.error_plot.set_layer(event.name, 0.0, 0)
            self.plan_table.set_error(event.name, 0.0, 0)
            self._done_numel += self._numel(event.name)
        elif type(event).__name__ == "SelfCheck":  # the job's held-out check (when it has one)
            self.check = event
        elif isinstance(event, QuantizeSummary):
            self.summary = event
        self._dirty = True  # the labels, the bar and the status line follow in flush()

    def _status_of(self, event) -> str:
        """The progress line for an event ('' for one that says nothing new)."""
        if isinstance(event, CalibrationProgress):
            what = (self.tr("embedding the calibration samples") if event.stage == "capture"
                    else self.tr("measuring sensitivity"))
            return f"{what} {event.done}/{event.total}"
        if isinstance(event, LayerQuantized):
            return self.tr("layer {i}/{n}: {name} ({method} {bits}-bit) error {err}").format(
                i=event.index, n=event.total, name=event.name, method=event.method,
                bits=event.bits, err=f"{event.rel_error:.4f}")
        if isinstance(event, TuningProgress):
            return self.tr("tuning block {b}/{n}: iteration {i}/{k}").format(
                b=event.block, n=event.blocks, i=event.iteration, k=event.iterations)
        if isinstance(event, BlockTuned):
            return self.tr("tuned block {b}/{n} in {s}").format(
                b=event.block, n=event.blocks, s=duration(event.seconds))
        if isinstance(event, SavingCheckpoint):
            return self.tr("saving {path}").format(path=event.path)
        if type(event).__name__ == "SelfCheck":
            return self.tr("checked the result on held-out text")
        return ""

    def _numel(self, name: str) -> int:
        shapes = self._shapes.get(self.source_key)
        if shapes is None:
            return 0
        return next((lin.numel for lin in shapes.linears if lin.name == name), 0)

    def eta_seconds(self) -> float | None:
        """Time left, from the speed of the layers done so far (weighted by size)."""
        if not self._layers_started or not self._done_numel or not self._total_numel:
            return None
        elapsed = time.monotonic() - self._layers_started
        left = self._total_numel - self._done_numel
        return elapsed * left / self._done_numel

    def _show_progress(self) -> None:
        if self.job is None:
            # After a run: its outcome, in the current language (this runs on a
            # language change too); a cancel or failure message is left as set.
            if self.summary is not None:
                self.progress_label.setText(self.tr("Done: {path}").format(
                    path=self.summary.output_dir))
            return
        eta = self.eta_seconds()
        parts = [self._status,
                 self.tr("elapsed {t}").format(t=duration(time.monotonic() - self._started))]
        if eta is not None:
            parts.append(self.tr("about {t} left").format(t=duration(eta)))
        parts.append(self.tr("qdesk memory {m}").format(m=mib(process_memory_bytes())))
        self.progress_label.setText(" · ".join(p for p in parts if p))

    def flush(self) -> None:
        """Redraw what changed (the timer, and before a screenshot): events only
        fill buffers, so a burst of them costs one redraw."""
        self.error_plot.redraw()
        self.sensitivity_plot.redraw()
        done, total = self._progress
        if total:
            self.progress.setMaximum(total)
            self.progress.setValue(done)
        if self._dirty and self.job is not None:
            self.job.set_status(self._status, done, total)
        self._dirty = False
        self._show_progress()

    def _finish(self) -> None:
        self.job = None
        self._timer.stop()
        self.flush()
        self._set_running(False)

    def _on_done(self, result) -> None:
        summary = self.summary or getattr(result, "summary", None)
        self._finish()
        self.summary = summary
        if summary is None:
            return
        check = self.check if self.check is not None else getattr(summary, "check", None)
        self.check = check
        self.summary_view.set_summary(summary, check)
        if summary.plan == "sensitivity":  # the table holds what the search chose: reusable
            self.form.blockSignals(True)
            self.form.set_custom_plan()
            self.form.blockSignals(False)
        self.summary_view.export.setVisible(self.context.has_page("export"))
        self.progress_label.setText(self.tr("Done: {path}").format(path=summary.output_dir))
        # The job changed the source model's weights in place: load it again from disk.
        self.models.reload(self.source_key)
        self.new_key = self.models.load(str(self.out), "auto", origin=self.source_key,
                                        self_check=_as_dict(check), select=False) or ""

    def _on_failed(self, message: str) -> None:
        self._finish()
        self.summary_view.clear("failed", message)
        self.progress_label.setText("")
        self._update_prediction()

    def _on_cancelled(self) -> None:
        if self.summary is not None:  # cancelled after the last step: the run completed
            return self._on_done(None)
        self._finish()
        self.summary_view.clear("cancelled")
        self.progress_label.setText("")
        self._update_prediction()

    # -- next steps ---------------------------------------------------------------------------
    def _chat(self) -> None:
        keys = [k for k in (self.source_key, self.new_key) if k]
        self.context.request_chat(keys)

    def _export(self) -> None:
        if self.new_key:
            self.context.request_export(self.new_key)

    def _open_folder(self) -> None:
        if self.summary is not None and self.summary.output_dir:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.summary.output_dir))

    def save_state(self) -> None:
        try:
            self.context.settings.set_page_options(self.page_key, self.form.options().to_json())
        except QdeskError:
            pass

    # -- screenshot script ----------------------------------------------------------------------
    def _script_set(self, **values) -> None:
        self.form.set_options(QuantizeOptions.from_mapping(values, self.form.options()))

    def _script_start_when_ready(self, wait_for_end: bool) -> Wait:
        """Start once the model is measured; wait until started (or ended)."""
        state: dict = {"started": False, "failed": None}

        def until() -> bool:
            if not state["started"]:
                if self.shapes() is None and self.entry() is not None:
                    return False
                state["started"] = True
                if not self.run_action():
                    state["failed"] = "the quantization did not start"
                return False
            return self.job is None or not wait_for_end

        def failed() -> str | None:
            if state["failed"]:
                return state["failed"]
            if self.summary_view._state == "failed":
                return self.summary_view._message or "the quantization failed"
            return None

        return Wait(until, "the quantization", failed=failed)

    def _script_run(self) -> Wait:
        return self._script_start_when_ready(wait_for_end=True)

    def _script_start(self) -> Wait:
        return self._script_start_when_ready(wait_for_end=False)

    def _script_wait_layers(self, n: str) -> Wait:
        want = int(n)
        return Wait(lambda: self.error_plot.bar_count() >= want or self.job is None,
                    f"{want} layers")

    def _script_cancel(self) -> Wait:
        self.cancel_action()
        return Wait(lambda: self.job is None, "the cancel")

    def _script_tab(self, name: str) -> None:
        tabs = {"error": self.error_plot, "plan": self.plan_table, "sensitivity": self.sensitivity_plot}
        if name not in tabs:
            raise BadInput(f"no tab '{name}' (tabs: {', '.join(tabs)})")
        self.tabs.setCurrentWidget(tabs[name])


def _as_dict(check):
    if check is None or isinstance(check, dict):
        return check
    to_json = getattr(check, "to_json", None)
    return to_json() if callable(to_json) else dict(getattr(check, "__dict__", {}))


def create_page(context) -> QuantizePage:
    return QuantizePage(context)
