"""The Export page: a model (the sidebar's selection, or the model an "Export…"
request names) written as GGUF or safetensors, with progress per stage, Cancel
(nothing is left on disk), and the verification: the file reopened in its
consumer against the in-memory model on held-out text.

The job is core's ``export_steps`` run by the job runner; the page only reads
its events. An existing target is replaced only when it is a previous qdesk
export of the same kind, and only after the user confirms.
"""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from qdesk.core.errors import BadInput, QdeskError
from qdesk.core.export import (
    CONVERTER_TYPES,
    LLAMA_TYPES,
    ExportConfig,
    ExportDone,
    ExportProgress,
    ExportStarted,
    QuantizerStarted,
    Verification,
    check_outputs,
    export_steps,
    previous_export_kind,
)
from qdesk.core.paths import data_dir
from qdesk.gui.model_registry import READY
from qdesk.gui.script import Wait
from qdesk.gui.widgets.settings_dialog import OUTPUT_DIR_KEY

FORMATS = ("gguf", "gptq", "compressed-tensors", "bf16")
GGUF_CHOICES = ("exact", *CONVERTER_TYPES, "Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K",
                "IQ4_XS", *[t for t in LLAMA_TYPES if t not in
                            ("Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K", "IQ4_XS")])
IMATRIX_SETS = ("mix", "general", "code", "chat", "reasoning", "zh")


class ExportPage(QWidget):
    page_key = "export"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.models = context.models
        self.runner = context.runner
        self.model_key = ""
        self.job = None
        self.events: list = []
        self.result: ExportDone | None = None
        self.verification: Verification | None = None
        self._suggested = ""
        self._stage = ""
        self._ended: tuple[str, str] | None = None  # how the last run ended, shown translated
        self.replace_without_asking = False  # screenshot scripts: no modal question

        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.format = QComboBox()
        self.type = QComboBox()
        self.imatrix = QComboBox()
        self.allow_requantize = QCheckBox()
        self.verify = QCheckBox()
        self.verify.setChecked(True)
        self.output = QLineEdit()
        self.browse = QPushButton()
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setObjectName("export-hint")
        out_row = QHBoxLayout()
        out_row.addWidget(self.output, 1)
        out_row.addWidget(self.browse)
        self.form = QFormLayout()
        self.format_label, self.type_label, self.imatrix_label, self.output_label = (
            QLabel(), QLabel(), QLabel(), QLabel())
        self.form.addRow(self.format_label, self.format)
        self.form.addRow(self.type_label, self.type)
        self.form.addRow(self.imatrix_label, self.imatrix)
        self.form.addRow(self.output_label, out_row)
        self.form.addRow("", self.allow_requantize)
        self.form.addRow("", self.verify)

        self.run_button = QPushButton()
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton()
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button, 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_label = QLabel()
        self.progress_label.setWordWrap(True)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.result_label.setObjectName("export-result")
        self.verification_label = QLabel()
        self.verification_label.setWordWrap(True)
        self.verification_label.setObjectName("export-verification")

        column = QVBoxLayout()
        column.addWidget(self.model_label)
        column.addLayout(self.form)
        column.addWidget(self.hint)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.progress_label)
        column.addWidget(self.result_label)
        column.addWidget(self.verification_label)
        column.addStretch(1)
        box = QWidget()
        box.setLayout(column)
        box.setMaximumWidth(760)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.addWidget(box, 1)
        layout.addStretch(0)

        for fmt in FORMATS:
            self.format.addItem("", fmt)
        for t in GGUF_CHOICES:
            self.type.addItem(t, t)
        self.imatrix.addItem("", "")
        for name in IMATRIX_SETS:
            self.imatrix.addItem(name, name)
        self.format.currentIndexChanged.connect(self._options_changed)
        self.type.currentIndexChanged.connect(self._options_changed)
        self.imatrix.currentIndexChanged.connect(self._options_changed)
        self.browse.clicked.connect(self._browse)
        self.run_button.clicked.connect(self.run_action)
        self.cancel_button.clicked.connect(self.cancel_action)
        self.models.selection_changed.connect(lambda _key: self._model_changed())
        self.models.changed.connect(self._entry_changed)
        self.models.removed.connect(self._entry_changed)
        context.export_requested.connect(self.request)

        s = context.script
        s.register("export.set", self._script_set,
                   "export.set format=gguf type=Q4_K_M imatrix=mix output=PATH [replace=yes]")
        s.register("export.run", self._script_run, "export.run (waits until it ends)")
        s.register("export.cancel", self._script_cancel, "export.cancel (waits until it stopped)")

        saved = context.settings.page_options(self.page_key)
        self._set_combo(self.format, saved.get("format", "gguf"))
        self._set_combo(self.type, saved.get("type", "Q4_K_M"))
        self.retranslate()
        self._model_changed()

    # -- texts -------------------------------------------------------------------------------
    def page_title(self) -> str:
        return self.tr("Export")

    def retranslate(self) -> None:
        names = {"gguf": self.tr("GGUF (llama.cpp)"), "gptq": self.tr("GPTQ safetensors (vLLM)"),
                 "compressed-tensors": self.tr("compressed-tensors (transformers, vLLM)"),
                 "bf16": self.tr("BF16 safetensors (dense)")}
        for i in range(self.format.count()):
            self.format.setItemText(i, names[self.format.itemData(i)])
        self.type.setItemText(0, self.tr("exact (the checkpoint's own codes)"))
        self.imatrix.setItemText(0, self.tr("none"))
        self.format_label.setText(self.tr("Format"))
        self.type_label.setText(self.tr("GGUF type"))
        self.imatrix_label.setText(self.tr("Importance matrix"))
        self.imatrix.setToolTip(self.tr("llama.cpp's types: qdesk computes the matrix from this "
                                        "calibration set and writes it beside the file"))
        self.output_label.setText(self.tr("Output"))
        self.browse.setText(self.tr("Browse…"))
        self.allow_requantize.setText(self.tr("Re-quantize already quantized weights"))
        self.allow_requantize.setToolTip(self.tr("A second rounding on top of the first; "
                                                 "exact keeps a checkpoint's own weights"))
        self.verify.setText(self.tr("Verify: reopen the file and compare it on held-out text"))
        self.run_button.setText(self.tr("Export"))
        self.run_button.setToolTip(self.tr("Write the file (Ctrl+R)"))
        self.cancel_button.setText(self.tr("Cancel"))
        self.cancel_button.setToolTip(self.tr("Stop; nothing is left on disk (Esc)"))
        self._show_model()
        self._update_hint()
        self._show_ending()
        if self.result is not None:
            self._show_result()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # -- the model ---------------------------------------------------------------------------
    def entry(self):
        return self.models.entry(self.model_key)

    def request(self, key: str) -> None:
        """Another page asked to export ``key`` (e.g. a model just quantized)."""
        if self.job is not None:
            return
        self.model_key = key
        entry = self.entry()
        if entry is not None and entry.is_quantized:
            self._set_combo(self.format, "gguf")
            self._set_combo(self.type, "exact")
        self._show_model()
        self._suggest_output(force=True)
        self._update_hint()

    def _model_changed(self) -> None:
        if self.job is not None:
            return
        selected = self.models.selected()
        self.model_key = selected.key if selected is not None else ""
        self._show_model()
        self._suggest_output()
        self._update_hint()

    def _entry_changed(self, key: str) -> None:
        if key != self.model_key and self.model_key:
            return
        if self.entry() is None:
            self._model_changed()
        else:
            self._show_model()

    def _suitable(self, entry) -> str:
        if entry is None:
            return self.tr("Select a model in the sidebar (the demo model works offline).")
        if entry.state != READY:
            return self.tr("{name} is not loaded yet.").format(name=entry.name)
        if entry.facts.backend != "hf" or entry.loaded.model is None:
            return self.tr("{name} runs on llama.cpp; exports start from the transformers "
                           "backend (load it with backend transformers).").format(name=entry.name)
        return ""

    def _show_model(self) -> None:
        entry = self.entry()
        why = self._suitable(entry)
        if why:
            self.model_label.setText(why)
            self.model_label.setStyleSheet("color: #9a6700;")
        else:
            what = (self.tr("quantized") if entry.is_quantized else self.tr("dense"))
            self.model_label.setText(self.tr("Model: <b>{name}</b> · {what} · {params}M "
                                             "parameters").format(
                name=entry.name, what=what, params=f"{entry.facts.parameters / 1e6:,.0f}"))
            self.model_label.setStyleSheet("")
        self.run_button.setEnabled(not why and self.job is None)

    # -- options ------------------------------------------------------------------------------
    @staticmethod
    def _set_combo(combo: QComboBox, value: str) -> None:
        i = combo.findData(value)
        if i >= 0:
            combo.setCurrentIndex(i)

    def _options_changed(self) -> None:
        gguf = self.format.currentData() == "gguf"
        self.type.setEnabled(gguf)
        llama = gguf and self.type.currentData() in LLAMA_TYPES
        self.imatrix.setEnabled(llama)
        self._suggest_output()
        self._update_hint()

    def _suggest_output(self, force: bool = False) -> None:
        entry = self.entry()
        if entry is None or (not force and self.output.text().strip() not in ("", self._suggested)):
            return  # the user chose a path: keep it
        parent = Path(str(self.context.settings.value(OUTPUT_DIR_KEY, "") or "")
                      or data_dir() / "exports")
        base = re.sub(r"[^\w.-]+", "-", entry.name.split(" ")[0]).strip("-") or "model"
        fmt = self.format.currentData()
        name = f"{base}-{self.type.currentData()}.gguf" if fmt == "gguf" else f"{base}-{fmt}"
        candidate, n = parent / name, 2
        while candidate.exists():
            stem = name[:-5] if name.endswith(".gguf") else name
            candidate = parent / (f"{stem}-{n}.gguf" if fmt == "gguf" else f"{stem}-{n}")
            n += 1
        self._suggested = str(candidate)
        self.output.setText(self._suggested)

    def _update_hint(self) -> None:
        fmt, t = self.format.currentData(), self.type.currentData()
        entry = self.entry()
        quantized = entry is not None and entry.loaded is not None and entry.is_quantized
        if fmt == "gguf" and t == "exact":
            text = self.tr("Q4_0 / Q5_0 / Q8_0 blocks built from the checkpoint's codes and scales: "
                           "llama.cpp runs exactly qdesk's weights.")
        elif fmt == "gguf" and t in CONVERTER_TYPES:
            text = self.tr("llama.cpp's own converter, tokenizer and chat template carried over.")
        elif fmt == "gguf":
            text = self.tr("llama.cpp's quantizer in a separate process (a crash cannot take the app "
                           "down); sizes below 256-wide rows fall back to other types.")
        elif fmt == "gptq":
            text = self.tr("For vLLM: symmetric 4- or 8-bit checkpoints, groups of 32, 64, 128 or "
                           "per channel.")
        elif fmt == "compressed-tensors":
            text = self.tr("The qdesk checkpoint as it is: transformers and vLLM load it.")
        else:
            text = self.tr("Dense bfloat16 weights in shards with an index.")
        if quantized and fmt == "gguf" and t in LLAMA_TYPES + ("Q8_0",):
            text += " " + self.tr("The model is already quantized: tick re-quantize to round it "
                                  "again, or choose exact.")
        self.hint.setText(text)

    def _browse(self) -> None:
        if self.format.currentData() == "gguf":
            path, _ = QFileDialog.getSaveFileName(self, self.tr("Export to"), self.output.text(),
                                                  self.tr("GGUF files (*.gguf)"))
        else:
            path = QFileDialog.getExistingDirectory(self, self.tr("Export into a new folder"),
                                                    str(Path(self.output.text()).parent))
        if path:
            self.output.setText(path)

    def config(self, force: bool = False) -> ExportConfig:
        fmt = self.format.currentData()
        out = self.output.text().strip()
        if not out:
            raise BadInput(self.tr("choose where to write the export"))
        llama = fmt == "gguf" and self.type.currentData() in LLAMA_TYPES
        return ExportConfig(
            format=fmt, output=Path(out), type=self.type.currentData() if fmt == "gguf" else None,
            force=force, allow_requantize=self.allow_requantize.isChecked(),
            imatrix_calib=(self.imatrix.currentData() or None) if llama else None,
            verify=self.verify.isChecked(),
        )

    def ask_replace(self, path: Path) -> bool:
        """Confirm replacing a previous qdesk export (a dialog; tests replace this)."""
        if self.replace_without_asking:
            return True
        answer = QMessageBox.question(
            self, self.tr("Replace the export?"),
            self.tr("{path} is a previous qdesk export. Replace it?").format(path=path))
        return answer == QMessageBox.StandardButton.Yes

    # -- running ------------------------------------------------------------------------------
    def run_action(self) -> bool:
        """Start the export; False (after one dialog with the reason) when it cannot."""
        if self.job is not None:
            return False
        title = self.tr("Cannot export")
        entry = self.entry()
        why = self._suitable(entry)
        if why:
            self.runner.show_error(title, why)
            return False
        try:
            config = self.config()
            Path(config.output).parent.mkdir(parents=True, exist_ok=True)
            try:
                check_outputs(config)
            except BadInput:
                if not config.output.exists() or \
                        previous_export_kind(config.output) != config.format:
                    raise
                if not self.ask_replace(config.output):
                    return False
                config = self.config(force=True)
                check_outputs(config)
        except QdeskError as e:
            self.runner.show_error(title, str(e))
            return False
        loaded = entry.loaded
        job = self.runner.start(
            lambda: self.tr("Exporting {name}").format(name=entry.name),
            lambda: export_steps(loaded, config),
            models=(entry.key,), on_event=self._on_event, on_done=self._on_done,
            on_failed=self._on_failed, on_cancelled=self._on_cancelled, throttle_ms=100,
        )
        if job is None:
            return False
        self.context.settings.set_page_options(self.page_key, {
            "format": config.format, "type": config.type})
        self.job = job
        self._ended = None
        self.events, self.result, self.verification = [], None, None
        self.result_label.setText("")
        self.verification_label.setText("")
        self._stage = ""
        self.progress.setRange(0, 0)
        self._set_running(True)
        return True

    def cancel_action(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.progress_label.setText(self.tr("cancelling…"))

    def _set_running(self, running: bool) -> None:
        for w in (self.format, self.type, self.imatrix, self.output, self.browse,
                  self.allow_requantize, self.verify):
            w.setEnabled(not running)
        if not running:
            self._options_changed()
        self.cancel_button.setEnabled(running)
        self.run_button.setEnabled(not running and not self._suitable(self.entry()))

    def stage_text(self, stage: str) -> str:
        return {
            "dequantize": self.tr("dequantizing the checkpoint"),
            "convert": self.tr("llama.cpp's converter"),
            "map": self.tr("matching tensors to layers"),
            "imatrix": self.tr("computing the importance matrix"),
            "quantize": self.tr("llama.cpp's quantizer"),
            "write": self.tr("writing"),
            "check": self.tr("checking the written weights"),
            "verify": self.tr("verifying in the consumer"),
        }.get(stage, stage)

    def _on_event(self, event) -> None:
        self.events.append(event)
        status = ""
        if isinstance(event, ExportStarted):
            status = self.tr("starting {target}").format(target=event.target)
        elif isinstance(event, QuantizerStarted):
            status = self.tr("llama.cpp's quantizer started ({type})").format(type=event.ftype)
        elif isinstance(event, ExportProgress):
            if event.total:
                self.progress.setRange(0, event.total)
                self.progress.setValue(min(event.done, event.total))
            else:
                self.progress.setRange(0, 0)  # busy: the total is not known yet
            count = f"{event.done}/{event.total}" if event.total else str(event.done)
            status = f"{self.stage_text(event.stage)} {count}" + (
                f" · {event.detail}" if event.detail else "")
        elif isinstance(event, Verification):
            self.verification = event
            status = self.tr("verified")
        elif isinstance(event, ExportDone):
            self.result = event
        if status:
            self.progress_label.setText(status)
            if self.job is not None:
                self.job.set_status(status, self.progress.value(), self.progress.maximum())

    def _finish(self) -> None:
        self.job = None
        self._set_running(False)

    def _on_done(self, result) -> None:
        self._finish()
        if isinstance(result, ExportDone):
            self.result = result
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self._ended = ("done", "")
        self._show_ending()
        self._show_result()
        self._suggest_output(force=True)

    def _on_failed(self, message: str) -> None:
        self._finish()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._ended = ("failed", message)
        self._show_ending()

    def _on_cancelled(self) -> None:
        self._finish()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._ended = ("cancelled", "")
        self._show_ending()

    def _show_ending(self) -> None:
        if self._ended is None or self.job is not None:
            return
        outcome, reason = self._ended
        self.progress_label.setText({
            "done": self.tr("Done."),
            "failed": self.tr("Failed: {reason}").format(reason=reason),
            "cancelled": self.tr("Cancelled: nothing was written."),
        }[outcome])

    def _show_result(self) -> None:
        r = self.result
        if r is None:
            return
        types = ", ".join(f"{k} {v}" for k, v in sorted(r.tensor_types.items()))
        lines = [self.tr("<b>{path}</b> · {size} MiB · {bpw} bits per weight · {s} s").format(
            path=r.path, size=f"{r.bytes / 2**20:.1f}", bpw=f"{r.bits_per_weight:.2f}",
            s=f"{r.seconds:.0f}")]
        if types:
            lines.append(self.tr("tensor types: {types}").format(types=types))
        if r.imatrix:
            lines.append(self.tr("importance matrix: {path}").format(path=r.imatrix))
        lines += [self.tr("note: {text}").format(text=n) for n in r.notes]
        self.result_label.setText("<br>".join(lines))
        v = r.verification or self.verification
        if v is None:
            self.verification_label.setText(self.tr("Not verified."))
            self.verification_label.setStyleSheet("")
            return
        text = self.tr("Verified in {consumer} against the in-memory model ({windows} × {ctx} "
                       "tokens of {text}): mean KLD <b>{kld}</b>, same top p <b>{same}%</b>, "
                       "PPL ratio {ppl}.").format(
            consumer=v.consumer, windows=v.windows, ctx=v.ctx, text=v.text,
            kld=f"{v.mean_kld:.5f}", same=f"{100 * v.same_top_p:.1f}", ppl=f"{v.ppl_ratio:.4f}")
        if v.weights_exact is not None:
            text += " " + (self.tr("The file's weights are qdesk's, bit for bit.") if v.weights_exact
                           else self.tr("The file's weights differ from qdesk's (rounded scales)."))
        colour = ""
        if v.passed is True:
            text += " " + self.tr("Within the exact-export bound.")
            colour = "color: #1a7f37;"
        elif v.passed is False:
            text += " " + self.tr("Outside the exact-export bound (mean KLD < 0.001, same top p ≥ "
                                  "99%): llama.cpp rounds activations to 8 bits in quantized "
                                  "matrix products.")
            colour = "color: #9a6700;"
        self.verification_label.setText(text)
        self.verification_label.setStyleSheet(colour)

    def save_state(self) -> None:
        self.context.settings.set_page_options(self.page_key, {
            "format": self.format.currentData(), "type": self.type.currentData()})

    # -- screenshot script ----------------------------------------------------------------------
    def _script_set(self, **values) -> None:
        for key, value in values.items():
            if key == "format":
                self._set_combo(self.format, value)
            elif key == "type":
                self._set_combo(self.type, "exact" if value.lower() == "exact" else value.upper())
            elif key == "imatrix":
                self._set_combo(self.imatrix, "" if value == "none" else value)
            elif key == "output":
                self.output.setText(value)
            elif key in ("verify", "allow_requantize"):
                getattr(self, key).setChecked(value.lower() in ("1", "true", "yes", "on"))
            elif key == "replace":  # replace a previous qdesk export there without asking
                self.replace_without_asking = value.lower() in ("1", "true", "yes", "on")
            else:
                raise BadInput(f"export.set: no option {key!r} (format, type, imatrix, output, "
                               "verify, allow_requantize, replace)")

    def _script_run(self) -> Wait:
        state = {"started": None}

        def until() -> bool:
            if state["started"] is None:
                state["started"] = self.run_action()
            return not state["started"] or self.job is None

        def failed() -> str | None:
            if state["started"] is False:
                return "the export did not start"
            return None

        return Wait(until, "the export", failed=failed)

    def _script_cancel(self) -> Wait:
        self.cancel_action()
        return Wait(lambda: self.job is None, "the cancel")


def create_page(context) -> ExportPage:
    return ExportPage(context)
