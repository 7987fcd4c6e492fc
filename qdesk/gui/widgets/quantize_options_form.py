"""The quantize page's form: every option of ``qdesk quantize``.

It shows a ``QuantizeOptions`` and emits ``changed`` on every edit; it offers
only the group sizes that divide the model's Linear widths (``set_widths``)
and says why the others are not offered. File choices (plan, calibration,
output) open their dialogs here; nothing else starts from it.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qdesk.gui.quantize_request import (
    BITS,
    CALIBRATION_SETS,
    GROUP_SIZES,
    METHODS,
    PLAN_PRESETS,
    QuantizeOptions,
)

_FILE = "<file>"  # the combo entry that opens a file dialog


def _row(*widgets, stretch_first=True) -> QWidget:
    w = QWidget()
    layout = QHBoxLayout(w)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if (i == 0 and stretch_first) else 0)
    return w


_TRISTATE = {"auto": None, "on": True, "off": False}  # item data -> option value


def _tristate_combo() -> QComboBox:
    """auto / on / off for an option whose None means the method's own choice
    (the texts are set in retranslate)."""
    combo = QComboBox()
    for key in _TRISTATE:
        combo.addItem("", key)
    return combo


def _set_tristate(combo: QComboBox, value: bool | None) -> None:
    combo.setCurrentIndex(combo.findData(next(k for k, v in _TRISTATE.items() if v is value)))


class QuantizeOptionsForm(QWidget):
    changed = Signal()
    preview_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._plan_file = ""
        self._calib_file = ""
        self._widths: set[int] = set()

        self.method = QComboBox()
        for m in METHODS:
            self.method.addItem(m.upper(), m)
        self.hqq_zero = QComboBox()
        self.hqq_zero.addItem("", "int")
        self.hqq_zero.addItem("", "float")
        self.clip_search = _tristate_combo()
        self.dense_targets = _tristate_combo()
        self.signround_iters = QSpinBox()
        self.signround_iters.setRange(0, 10_000)
        self.signround_iters.setSingleStep(25)
        self.bits = QComboBox()
        for b in BITS:
            self.bits.addItem(str(b), b)
        self.group = QComboBox()
        for g in GROUP_SIZES:
            self.group.addItem("", g)
        self.group_note = QLabel()
        self.group_note.setWordWrap(True)
        self.group_note.setStyleSheet("color: palette(mid);")
        self.symmetric = QComboBox()
        self.symmetric.addItem("", True)
        self.symmetric.addItem("", False)

        self.plan = QComboBox()
        for p in PLAN_PRESETS:
            self.plan.addItem(p, p)
        self.plan.addItem("", "custom")
        self.plan.addItem("", _FILE)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0.0, 16.0)
        self.budget.setDecimals(2)
        self.budget.setSingleStep(0.25)
        self.budget.setSpecialValueText("")

        self.calib = QComboBox()
        for c in CALIBRATION_SETS:
            self.calib.addItem(c, c)
        self.calib.addItem("", _FILE)
        self.preview = QPushButton()
        self.samples = QSpinBox()
        self.samples.setRange(1, 100_000)
        self.tokens = QSpinBox()
        self.tokens.setRange(8, 131_072)
        self.tokens.setSingleStep(64)
        self.chat_template = QCheckBox()
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)

        self.output = QLineEdit()
        self.browse = QPushButton()
        self.force = QCheckBox()

        self._labels: dict[QWidget, QLabel] = {}
        self.method_box = QGroupBox()
        form = QFormLayout(self.method_box)
        self._method_form = form
        self._add(form, self.method)
        self._add(form, self.hqq_zero)
        self._add(form, self.clip_search)
        self._add(form, self.signround_iters)
        self._add(form, self.dense_targets)
        self._add(form, self.bits)
        self._add(form, self.group)
        form.addRow(self.group_note)
        self._add(form, self.symmetric)
        self.plan_box = QGroupBox()
        form = QFormLayout(self.plan_box)
        self._plan_form = form
        self._add(form, self.plan)
        self._add(form, self.budget)
        self.calib_box = QGroupBox()
        form = QFormLayout(self.calib_box)
        self._calib_form = form
        self._add(form, _row(self.calib, self.preview))
        self._add(form, _row(self.samples, QLabel("×"), self.tokens, stretch_first=False))
        self._add(form, self.seed)
        form.addRow(self.chat_template)
        self.output_box = QGroupBox()
        form = QFormLayout(self.output_box)
        self._output_form = form
        form.addRow(_row(self.output, self.browse))
        form.addRow(self.force)
        for f in (self._method_form, self._plan_form, self._calib_form, self._output_form):
            f.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (self.method_box, self.plan_box, self.calib_box, self.output_box):
            layout.addWidget(box)
        layout.addStretch(1)

        for combo in (self.method, self.hqq_zero, self.clip_search, self.dense_targets, self.bits,
                      self.group, self.symmetric):
            combo.currentIndexChanged.connect(self._edited)
        self.plan.currentIndexChanged.connect(self._plan_chosen)
        self.calib.currentIndexChanged.connect(self._calib_chosen)
        for spin in (self.samples, self.tokens, self.seed, self.signround_iters):
            spin.valueChanged.connect(self._edited)
        self.budget.valueChanged.connect(self._edited)
        self.chat_template.toggled.connect(self._edited)
        self.force.toggled.connect(self._edited)
        self.output.textChanged.connect(self._edited)
        self.browse.clicked.connect(self._browse_output)
        self.preview.clicked.connect(self.preview_requested)
        self.set_options(QuantizeOptions())
        self.retranslate()

    # -- texts -----------------------------------------------------------------------------
    def retranslate(self) -> None:
        self.method_box.setTitle(self.tr("Method"))
        self.plan_box.setTitle(self.tr("Plan"))
        self.calib_box.setTitle(self.tr("Calibration"))
        self.output_box.setTitle(self.tr("Output folder"))
        labels = {
            self.method: self.tr("Method:"), self.hqq_zero: self.tr("HQQ zero:"),
            self.clip_search: self.tr("Clip search:"), self.bits: self.tr("Bits:"),
            self.signround_iters: self.tr("Iterations:"),
            self.dense_targets: self.tr("Dense targets:"),
            self.group: self.tr("Group size:"), self.symmetric: self.tr("Zero point:"),
            self.plan: self.tr("Preset:"), self.budget: self.tr("Budget:"),
            self.seed: self.tr("Seed:"),
        }
        for widget, text in labels.items():
            self._labels[widget].setText(text)
        self._labels[self.calib.parentWidget()].setText(self.tr("Set:"))
        self._labels[self.samples.parentWidget()].setText(self.tr("Samples × tokens:"))
        tips = {
            "rtn": self.tr("Round to nearest: fast, no calibration needed except to measure "
                           "the error"),
            "gptq": self.tr("GPTQ: rounds column by column and corrects the remaining columns "
                            "with the calibration inputs' second moments (Hessian)"),
            "awq": self.tr("AWQ: scales the input channels that carry large activations before "
                           "rounding, so they lose less; needs calibration"),
            "hqq": self.tr("HQQ: optimises each group's zero point (and scale) against an lp "
                           "error; no calibration needed; asymmetric only"),
            "signround": self.tr("SignRound: learns each weight's rounding and each group's "
                                 "clipping by signed gradient descent on every decoder "
                                 "block's output; slowest, most accurate; needs calibration"),
        }
        for i, m in enumerate(METHODS):
            self.method.setItemData(i, tips[m], Qt.ItemDataRole.ToolTipRole)
        self.method.setToolTip(self.tr("How weights are rounded to integers"))
        self.hqq_zero.setItemText(0, self.tr("integer (packed, bits + 16 per group)"))
        self.hqq_zero.setItemText(1, self.tr("16-bit float (better at 4 bits, larger file)"))
        self.hqq_zero.setToolTip(self.tr("How HQQ stores each group's zero point"))
        self.clip_search.setItemText(0, self.tr("auto (on for the narrow grid only)"))
        self.clip_search.setItemText(1, self.tr("on"))
        self.clip_search.setItemText(2, self.tr("off (plain min-max)"))
        self.signround_iters.setToolTip(self.tr("SignRound: gradient steps per decoder block "
                                                "(more: better and slower)"))
        self.dense_targets.setItemText(0, self.tr("auto (off for GPTQ, on for SignRound)"))
        self.dense_targets.setItemText(1, self.tr("on"))
        self.dense_targets.setItemText(2, self.tr("off"))
        self.dense_targets.setToolTip(self.tr(
            "Aim each layer at the dense model's output, so it also makes up for the error "
            "the layers before it left (GPTQ: better, about twice the time)"))
        self.clip_search.setToolTip(self.tr("RTN: narrow each group's range to the one with the "
                                            "least squared weight error"))
        self.bits.setToolTip(self.tr("Integer width of each weight; fewer bits, smaller model, "
                                     "larger error"))
        for i, g in enumerate(GROUP_SIZES):
            self.group.setItemText(i, self.tr("per channel") if g == -1 else str(g))
        self.group.setToolTip(self.tr("How many consecutive weights of a row share one scale "
                                      "(and zero point). Smaller groups follow the weights more "
                                      "closely and cost more bits per weight; per channel is one "
                                      "scale per output row."))
        self.symmetric.setItemText(0, self.tr("symmetric"))
        self.symmetric.setItemText(1, self.tr("asymmetric (zero point)"))
        self.symmetric.setToolTip(self.tr("Symmetric: the integer grid is centred on zero (one "
                                          "scale per group). Asymmetric: each group also stores "
                                          "a zero point, so a range that is not centred on zero "
                                          "uses every level; costs a few bits per group."))
        self.plan.setItemText(len(PLAN_PRESETS), self.tr("custom (the table)"))
        self.plan.setItemText(len(PLAN_PRESETS) + 1, self.tr("from a file…"))
        self.plan.setToolTip(self.tr("Which layers get which bits: uniform; keep attention, MLP "
                                     "or q/k unquantized; sensitivity measures each layer and "
                                     "spends a budget of bits where they help most. Edit single "
                                     "layers in the Plan tab."))
        self.budget.setSpecialValueText(self.tr("+0.5 over uniform"))
        self.budget.setSuffix(self.tr(" bits per weight"))
        self.budget.setToolTip(self.tr("Sensitivity plan: the average bits per weight to spend"))
        self.calib.setItemText(len(CALIBRATION_SETS), self.tr("a .txt / .jsonl file…"))
        self.calib.setToolTip(self.tr("The text the quantizer sees: GPTQ and AWQ fit the weights "
                                      "to these inputs, and every method's error is measured on "
                                      "them. mix = English prose, chat, code, worked problems "
                                      "and Chinese in equal parts."))
        self.preview.setText(self.tr("Preview…"))
        self.preview.setToolTip(self.tr("Show a few samples of the calibration set"))
        self.samples.setToolTip(self.tr("Number of calibration samples"))
        self.tokens.setToolTip(self.tr("Tokens per calibration sample"))
        self.seed.setToolTip(self.tr("Which windows of the set are drawn"))
        self.chat_template.setText(self.tr("Wrap file samples in the model's chat template"))
        self.chat_template.setToolTip(self.tr("For a calibration file of plain texts: present each "
                                              "as a user message, as the model sees chat"))
        self.output.setPlaceholderText(self.tr("folder for the quantized model"))
        self.output.setToolTip(self.tr("Written under a temporary name and renamed at the end: "
                                       "a cancelled or failed run leaves nothing"))
        self.browse.setText(self.tr("Browse…"))
        self.force.setText(self.tr("Replace an earlier qdesk checkpoint there"))
        self.force.setToolTip(self.tr("Only a folder that holds a qdesk checkpoint is replaced, "
                                      "never other files"))
        self._update_group_note()
        self._update_visibility()

    def _add(self, form: QFormLayout, field: QWidget) -> None:
        label = QLabel()
        self._labels[field] = label
        form.addRow(label, field)

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # -- the model's widths -------------------------------------------------------------------
    def set_widths(self, widths: set[int]) -> None:
        """Input widths of the model's Linears: only group sizes dividing all are offered."""
        self._widths = set(widths)
        model = self.group.model()
        for i, g in enumerate(GROUP_SIZES):
            ok = g == -1 or all(w % g == 0 for w in self._widths)
            item = model.item(i)
            item.setEnabled(ok)
        if not model.item(self.group.currentIndex()).isEnabled():
            self.group.setCurrentIndex(self._first_enabled_group())
        self._update_group_note()

    def _first_enabled_group(self) -> int:
        model = self.group.model()
        for preferred in (64, 32, 128, -1):
            i = GROUP_SIZES.index(preferred)
            if model.item(i).isEnabled():
                return i
        return 0

    def refused_group_sizes(self) -> list[int]:
        return [g for g in GROUP_SIZES if g != -1 and any(w % g for w in self._widths)]

    def _update_group_note(self) -> None:
        refused = self.refused_group_sizes()
        if not refused:
            self.group_note.setText("")
            self.group_note.hide()
            return
        widths = sorted(w for w in self._widths if any(w % g for g in refused))
        self.group_note.setText(self.tr("Not offered: {sizes} — they do not divide the input "
                                        "width {widths} of some layers.").format(
            sizes=", ".join(map(str, refused)), widths=", ".join(map(str, widths))))
        self.group_note.show()

    # -- options --------------------------------------------------------------------------------
    def set_options(self, o: QuantizeOptions) -> None:
        widgets = (self.method, self.hqq_zero, self.clip_search, self.bits, self.group,
                   self.symmetric, self.plan, self.calib, self.samples, self.tokens, self.seed,
                   self.budget, self.chat_template, self.force, self.output,
                   self.signround_iters, self.dense_targets)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.method.setCurrentIndex(METHODS.index(o.method))
            self.hqq_zero.setCurrentIndex(0 if o.hqq_zero == "int" else 1)
            _set_tristate(self.clip_search, o.clip_search)
            self.signround_iters.setValue(o.signround_iters)
            _set_tristate(self.dense_targets, o.dense_targets)
            self.bits.setCurrentIndex(BITS.index(o.bits))
            self.group.setCurrentIndex(GROUP_SIZES.index(o.group_size))
            self.symmetric.setCurrentIndex(0 if o.symmetric else 1)
            if o.plan in PLAN_PRESETS or o.plan == "custom":
                self.plan.setCurrentIndex(self.plan.findData(o.plan))
                self._plan_file = ""
            else:
                self._plan_file = o.plan
                self.plan.setCurrentIndex(self.plan.findData(_FILE))
            if o.calib in CALIBRATION_SETS:
                self.calib.setCurrentIndex(self.calib.findData(o.calib))
                self._calib_file = ""
            else:
                self._calib_file = o.calib
                self.calib.setCurrentIndex(self.calib.findData(_FILE))
            self.samples.setValue(o.calib_samples)
            self.tokens.setValue(o.calib_tokens)
            self.seed.setValue(o.seed)
            self.budget.setValue(o.budget_bpw or 0.0)
            self.chat_template.setChecked(o.chat_template)
            self.force.setChecked(o.force)
            self.output.setText(o.output)
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._update_visibility()
        self.changed.emit()

    def options(self) -> QuantizeOptions:
        """The form as options (BadInput for an impossible combination)."""
        plan = self.plan.currentData()
        calib = self.calib.currentData()
        return QuantizeOptions(
            method=self.method.currentData(),
            bits=self.bits.currentData(),
            group_size=self.group.currentData(),
            symmetric=bool(self.symmetric.currentData()),
            hqq_zero=self.hqq_zero.currentData(),
            clip_search=_TRISTATE[self.clip_search.currentData()],
            signround_iters=self.signround_iters.value(),
            dense_targets=_TRISTATE[self.dense_targets.currentData()],
            plan=self._plan_file if plan == _FILE else plan,
            budget_bpw=self.budget.value() or None,
            calib=self._calib_file if calib == _FILE else calib,
            calib_samples=self.samples.value(),
            calib_tokens=self.tokens.value(),
            chat_template=self.chat_template.isChecked(),
            seed=self.seed.value(),
            output=self.output.text().strip(),
            force=self.force.isChecked(),
        )

    def set_custom_plan(self) -> None:
        """The table was edited: the plan is now the table's."""
        if self.plan.currentData() != "custom":
            self.plan.setCurrentIndex(self.plan.findData("custom"))

    def _update_visibility(self) -> None:
        method = self.method.currentData()
        self._method_form.setRowVisible(self.hqq_zero, method == "hqq")
        self._method_form.setRowVisible(self.clip_search, method == "rtn")
        self._method_form.setRowVisible(self.signround_iters, method == "signround")
        self._method_form.setRowVisible(self.dense_targets, method in ("gptq", "signround"))
        if method == "hqq":
            self.symmetric.setCurrentIndex(1)
        self.symmetric.setEnabled(method != "hqq")
        self._plan_form.setRowVisible(self.budget, self.plan.currentData() == "sensitivity")
        self.chat_template.setEnabled(self.calib.currentData() == _FILE)
        plan_tip = self._plan_file if self.plan.currentData() == _FILE else ""
        self.plan.setToolTip(plan_tip or self.plan.toolTip())

    def _edited(self, *_args) -> None:
        self._update_visibility()
        self.changed.emit()

    def _plan_chosen(self, _index: int) -> None:
        if self.plan.currentData() == _FILE:
            path, _ = QFileDialog.getOpenFileName(self, self.tr("A plan file"), "",
                                                  self.tr("Plans (*.yaml *.yml *.json)"))
            if path:
                self._plan_file = path
            elif not self._plan_file:
                self.plan.setCurrentIndex(0)
                return
        self._edited()

    def _calib_chosen(self, _index: int) -> None:
        if self.calib.currentData() == _FILE:
            path, _ = QFileDialog.getOpenFileName(self, self.tr("A calibration file"), "",
                                                  self.tr("Texts (*.txt *.jsonl);;All files (*)"))
            if path:
                self._calib_file = path
            elif not self._calib_file:
                self.calib.setCurrentIndex(0)
                return
        self._edited()

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.tr("Where the new model's folder goes"))
        if folder:
            name = self.output.text().strip().rsplit("/", 1)[-1] or "quantized"
            self.output.setText(f"{folder}/{name}")
