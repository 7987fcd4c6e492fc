"""The per-layer plan: one row per decoder Linear (module, bits or keep, group,
method, and the error once quantized), editable.

A preset fills the rows (``set_rows``); an edit emits ``edited``; ``rules()``
gives the rows that differ from a base configuration as exact-name plan rules,
so the job quantizes exactly what the table shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QEvent, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHeaderView,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

METHODS = ("rtn", "gptq", "awq", "hqq")
BITS = ("keep", "8", "4", "3", "2")
COLUMNS = ("module", "bits", "group", "method", "error")


@dataclass
class PlanRow:
    name: str
    in_features: int
    keep: bool
    bits: int
    group_size: int
    method: str
    error: float | None = None


class PlanModel(QAbstractTableModel):
    edited = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[PlanRow] = []
        self.group_choices: list[int] = [-1]
        self._index: dict[str, int] = {}
        self.headers = list(COLUMNS)
        self.labels = {"keep": "keep", "channel": "channel"}  # shown for the raw values

    def set_rows(self, rows: list[PlanRow], group_choices: list[int]) -> None:
        self.beginResetModel()
        self.rows = rows
        self.group_choices = group_choices
        self._index = {r.name: i for i, r in enumerate(rows)}
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section]
        return None

    def flags(self, index):
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if COLUMNS[index.column()] in ("bits", "group", "method"):
            row = self.rows[index.row()]
            if COLUMNS[index.column()] == "bits" or not row.keep:
                return base | Qt.ItemFlag.ItemIsEditable
        return base

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, col = self.rows[index.row()], COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole and col in ("bits", "group"):
            raw = self.data(index, Qt.ItemDataRole.EditRole)
            return self.labels.get(raw, raw)
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if col == "module":
                return row.name
            if col == "bits":
                return "keep" if row.keep else str(row.bits)
            if row.keep and col in ("group", "method"):
                return ""
            if col == "group":
                return "channel" if row.group_size == -1 else str(row.group_size)
            if col == "method":
                return row.method
            if col == "error":
                return "" if row.error is None else f"{row.error:.4f}"
        if role == Qt.ItemDataRole.TextAlignmentRole and col in ("bits", "group", "error"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.EditRole or not index.isValid():
            return False
        row, col = self.rows[index.row()], COLUMNS[index.column()]
        value = str(value)
        if col == "bits":
            row.keep = value == "keep"
            if not row.keep:
                row.bits = int(value)
        elif col == "group":
            row.group_size = -1 if value == "channel" else int(value)
        elif col == "method":
            row.method = value
        else:
            return False
        left, right = self.index(index.row(), 0), self.index(index.row(), len(COLUMNS) - 1)
        self.dataChanged.emit(left, right)
        self.edited.emit()
        return True

    def choices(self, index) -> list[str]:
        col = COLUMNS[index.column()]
        if col == "bits":
            return list(BITS)
        if col == "method":
            return list(METHODS)
        if col == "group":
            width = self.rows[index.row()].in_features
            return ["channel" if g == -1 else str(g) for g in self.group_choices
                    if g == -1 or width % g == 0]
        return []

    def set_error(self, name: str, error: float, bits: int | None = None) -> None:
        i = self._index.get(name)
        if i is None:
            return
        self.rows[i].error = error
        if bits is not None:  # what the job gave it (the sensitivity plan decides while it runs)
            self.rows[i].keep = bits == 0
            if bits:
                self.rows[i].bits = bits
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))


class _ChoiceDelegate(QStyledItemDelegate):
    def createEditor(self, parent, option, index):
        combo = QComboBox(parent)
        model = index.model()
        for value in model.choices(index):
            combo.addItem(model.labels.get(value, value), value)
        return combo

    def setEditorData(self, editor, index):
        i = editor.findData(str(index.data(Qt.ItemDataRole.EditRole)))
        editor.setCurrentIndex(max(0, i))

    def setModelData(self, editor, model, index):
        model.setData(index, editor.currentData())


class PlanTable(QWidget):
    edited = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = PlanModel(self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setItemDelegate(_ChoiceDelegate(self.view))
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.setAlternatingRowColors(True)
        self.view.setEditTriggers(QTableView.EditTrigger.DoubleClicked
                                  | QTableView.EditTrigger.SelectedClicked
                                  | QTableView.EditTrigger.EditKeyPressed)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # The short columns are sized from what they can hold, once per language,
        # not measured from the rows: with ResizeToContents each layer's error
        # arriving during a run re-measured the whole table, 100-150 ms of the GUI
        # thread every time on a 211-layer model (benchmarks/bench_ui.py --diagnose).
        for i in range(1, len(COLUMNS)):
            header.setSectionResizeMode(i, QHeaderView.ResizeMode.Interactive)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.model.edited.connect(self.edited)
        self.retranslate()

    def retranslate(self) -> None:
        self.model.headers = [self.tr("Module"), self.tr("Bits"), self.tr("Group"),
                              self.tr("Method"), self.tr("Error")]
        self.model.labels = {"keep": self.tr("keep"), "channel": self.tr("per channel")}
        self.model.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, len(COLUMNS) - 1)
        if self.model.rows:
            self.model.dataChanged.emit(self.model.index(0, 1),
                                        self.model.index(len(self.model.rows) - 1, 2))
        self.view.setToolTip(self.tr("Double-click a cell to change one layer: bits (or keep it "
                                     "unquantized), group size, method. Error: the layer's "
                                     "relative output error in the last run."))
        self._fit_columns()

    def _fit_columns(self) -> None:
        metrics = self.view.fontMetrics()
        samples = {
            "bits": [self.model.labels["keep"], "8"],
            "group": [self.model.labels["channel"], "1024"],
            "method": list(METHODS),
            "error": ["0.0000", "10.0000"],
        }
        for i, col in enumerate(COLUMNS[1:], start=1):
            texts = [self.model.headers[i], *samples[col]]
            width = max(metrics.horizontalAdvance(t) for t in texts) + 28  # padding, sort arrow
            self.view.horizontalHeader().resizeSection(i, width)

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def set_rows(self, rows: list[PlanRow], group_choices: list[int]) -> None:
        self.model.set_rows(rows, group_choices)

    def rows(self) -> list[PlanRow]:
        return self.model.rows

    def set_error(self, name: str, error: float, bits: int | None = None) -> None:
        self.model.set_error(name, error, bits)

    def clear_errors(self) -> None:
        for r in self.model.rows:
            r.error = None
        if self.model.rows:
            self.model.dataChanged.emit(self.model.index(0, 4),
                                        self.model.index(len(self.model.rows) - 1, 4))

    def rules(self, base) -> list[dict]:
        """The rows that differ from ``base`` (a QuantConfig) as plan rules with the
        exact module name (no glob characters occur in module names)."""
        out = []
        for r in self.model.rows:
            if r.keep:
                out.append({"match": r.name, "keep": True})
                continue
            rule = {"match": r.name}
            if r.bits != base.bits:
                rule["bits"] = r.bits
            if r.group_size != base.group_size:
                rule["group_size"] = r.group_size
            if r.method != base.method:
                rule["method"] = r.method
            if len(rule) > 1:
                out.append(rule)
        return out
