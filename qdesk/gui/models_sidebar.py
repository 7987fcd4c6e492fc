"""The models sidebar: loaded models with their state, the demo and recent ones,
ways to open more (folder, GGUF, hub id, drag and drop), and the facts of the
selected model.

It reads and changes the model registry only; the memory estimate of a model
that is not loaded yet comes from core (file headers, no loading).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qdesk.core.load_estimate import estimate_load
from qdesk.core.models import HUB_ID
from qdesk.gui.formatting import mib
from qdesk.gui.model_registry import FAILED, LOADING, READY, display_name, model_key
from qdesk.gui.widgets.download_dialog import DownloadDialog
from qdesk.gui.widgets.model_facts_view import ModelFactsView

_KEY = Qt.ItemDataRole.UserRole  # loaded entry key
_REF = Qt.ItemDataRole.UserRole + 1  # (text, backend) of a model not loaded
_BACKENDS = ("auto", "hf", "llamacpp")
_STATE_COLORS = {READY: "#2e7d32", LOADING: "#9a6700", FAILED: "#b00020"}


class ModelsSidebar(QWidget):
    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.models = context.models
        self._downloads: dict[str, DownloadDialog] = {}

        self.heading = QLabel()
        self.heading.setObjectName("sidebar-heading")
        font = self.heading.font()
        font.setBold(True)
        self.heading.setFont(font)

        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.setIconSize(QSize(10, 10))
        self.loaded_group = QTreeWidgetItem(self.tree)
        self.available_group = QTreeWidgetItem(self.tree)
        for group in (self.loaded_group, self.available_group):
            group.setFlags(Qt.ItemFlag.ItemIsEnabled)
            f = group.font(0)
            f.setBold(True)
            group.setFont(0, f)
            group.setExpanded(True)

        self.open_folder = QPushButton()
        self.open_gguf = QPushButton()
        self.hub_id = QLineEdit()
        self.hub_id.setClearButtonEnabled(True)
        self.download = QPushButton()
        self.backend_label = QLabel()
        self.backend = QComboBox()
        for _ in _BACKENDS:
            self.backend.addItem("")
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.load_button = QPushButton()
        self.unload_button = QPushButton()
        self.facts = ModelFactsView()

        opener = QGridLayout()
        opener.setContentsMargins(0, 0, 0, 0)
        opener.addWidget(self.open_folder, 0, 0)
        opener.addWidget(self.open_gguf, 0, 1)
        opener.addWidget(self.hub_id, 1, 0)
        opener.addWidget(self.download, 1, 1)
        opener.addWidget(self.backend_label, 2, 0)
        opener.addWidget(self.backend, 2, 1)
        opener.setColumnStretch(0, 3)
        opener.setColumnStretch(1, 2)
        actions = QHBoxLayout()
        actions.addWidget(self.load_button)
        actions.addWidget(self.unload_button)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.heading)
        top_layout.addWidget(self.tree, 1)
        top_layout.addLayout(actions)
        top_layout.addWidget(self.estimate)
        top_layout.addLayout(opener)
        facts_scroll = QScrollArea()
        facts_scroll.setWidgetResizable(True)
        facts_scroll.setWidget(self.facts)
        facts_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        # A scroll bar that comes and goes changes the facts' width after their
        # wrapped heights were computed, and a long path lost its last line.
        facts_scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        facts_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("sidebar-splitter")
        self.splitter.addWidget(top)
        self.splitter.addWidget(facts_scroll)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 0, 6)
        layout.addWidget(self.splitter)

        self.tree.currentItemChanged.connect(self._current_changed)
        self.tree.itemDoubleClicked.connect(self._double_clicked)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.open_folder.clicked.connect(self.choose_folder)
        self.open_gguf.clicked.connect(self.choose_gguf)
        self.download.clicked.connect(self._download_clicked)
        self.hub_id.returnPressed.connect(self._download_clicked)
        self.hub_id.textChanged.connect(self._hub_text_changed)
        self.load_button.clicked.connect(self._load_clicked)
        self.unload_button.clicked.connect(self._unload_clicked)
        self.backend.currentIndexChanged.connect(lambda _: self._update_estimate())
        self.models.changed.connect(self._entry_changed)
        self.models.removed.connect(self._entry_removed)
        self.models.selection_changed.connect(self._selection_changed)

        self.retranslate()
        self.refresh_available()
        self._hub_text_changed("")

    # -- texts ---------------------------------------------------------------------------
    def retranslate(self) -> None:
        self.heading.setText(self.tr("Models"))
        self.loaded_group.setText(0, self.tr("Loaded"))
        self.available_group.setText(0, self.tr("Demo and recent"))
        self.open_folder.setText(self.tr("Open folder…"))
        self.open_folder.setToolTip(self.tr("A Hugging Face model folder (config.json and "
                                            ".safetensors) or a qdesk quantized folder (Ctrl+O)"))
        self.open_gguf.setText(self.tr("Open GGUF…"))
        self.open_gguf.setToolTip(self.tr("A .gguf file; it runs on llama.cpp, or on "
                                          "transformers as a dense copy (Ctrl+Shift+O)"))
        self.hub_id.setPlaceholderText(self.tr("hub id ORG/NAME[@rev]"))
        self.hub_id.setToolTip(self.tr("A model on the Hugging Face hub, downloaded once into "
                                       "its cache (safetensors only)"))
        self.download.setText(self.tr("Download"))
        self.backend_label.setText(self.tr("Backend:"))
        names = (self.tr("auto"), self.tr("transformers"), self.tr("llama.cpp"))
        for i, text in enumerate(names):
            self.backend.setItemText(i, text)
        self.backend.setToolTip(self.tr("auto: llama.cpp for a .gguf file, transformers for "
                                        "everything else. Quantizing needs transformers."))
        self.load_button.setText(self.tr("Load"))
        self.load_button.setToolTip(self.tr("Load the selected model (double-click does too)"))
        self.unload_button.setText(self.tr("Unload"))
        self.unload_button.setToolTip(self.tr("Free the memory of the selected model"))
        for i in range(self.loaded_group.childCount()):
            self._paint(self.loaded_group.child(i))
        self.refresh_available()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    # -- the list --------------------------------------------------------------------------
    def refresh_available(self) -> None:
        """The demo and the recent models that are not loaded."""
        current = self._current_ref()
        self.available_group.takeChildren()
        rows = [{"text": "demo", "backend": "auto", "name": display_name("demo")}]
        rows += [r for r in self.context.settings.recent() if r["text"] != "demo"
                 or r.get("backend", "auto") != "auto"]
        for row in rows:
            backend = row.get("backend", "auto")
            if self.models.find(row["text"], backend) is not None:
                continue
            item = QTreeWidgetItem(self.available_group)
            name = row.get("name") or display_name(row["text"], backend)
            item.setText(0, "○ " + name)
            item.setToolTip(0, row["text"])
            item.setData(0, _REF, (row["text"], backend))
            if current == (row["text"], backend):
                self.tree.setCurrentItem(item)
        self.available_group.setHidden(self.available_group.childCount() == 0)

    def _item_for(self, key: str) -> QTreeWidgetItem | None:
        for i in range(self.loaded_group.childCount()):
            item = self.loaded_group.child(i)
            if item.data(0, _KEY) == key:
                return item
        return None

    def _paint(self, item: QTreeWidgetItem) -> None:
        entry = self.models.entry(item.data(0, _KEY))
        if entry is None:
            return
        if entry.state == READY:
            facts = entry.facts
            detail = (f"{facts.parameters / 1e6:,.0f}M {facts.dtype}" if not entry.is_quantized
                      else self._quant_detail(facts))
            text, tip = f"● {entry.name}\n    {detail}", self.tr("ready")
        elif entry.state == LOADING:
            p = entry.progress
            step = ""
            if p is not None and p.total > 0:
                step = f" {int(100 * p.done / p.total)}%"
            text, tip = f"◌ {entry.name}\n    " + self.tr("loading…") + step, self.tr("loading")
        else:
            text, tip = f"✕ {entry.name}\n    " + self.tr("failed: {reason}").format(
                reason=entry.error), entry.error
        item.setText(0, text)
        item.setToolTip(0, tip)
        item.setForeground(0, QBrush(QColor(_STATE_COLORS.get(entry.state, "#000"))))

    def _quant_detail(self, facts) -> str:
        q = facts.quantization
        bpw = q.get("bits_per_weight")
        bits = q.get("bits")
        text = self.tr("{bits}-bit").format(bits=bits) if bits else str(q.get("format", ""))
        return f"{text} · {bpw:.2f} bpw" if isinstance(bpw, (int, float)) else text

    def _entry_changed(self, key: str) -> None:
        item = self._item_for(key)
        if item is None:
            item = QTreeWidgetItem(self.loaded_group)
            item.setData(0, _KEY, key)
            self.refresh_available()
        self._paint(item)
        entry = self.models.entry(key)
        dialog = self._downloads.get(key)
        if dialog is not None and entry is not None:
            p = entry.progress
            if p is not None and p.stage == "download":
                dialog.progress(p.done, p.total)
            elif entry.state != LOADING or (p is not None and p.stage != "download"):
                self._downloads.pop(key).finish()
        if key == self.models.selected_key:
            self._show_facts()

    def _entry_removed(self, key: str) -> None:
        item = self._item_for(key)
        if item is not None:
            self.loaded_group.removeChild(item)
        dialog = self._downloads.pop(key, None)
        if dialog is not None:
            dialog.finish()
        self.refresh_available()

    def _selection_changed(self, key: str) -> None:
        item = self._item_for(key)
        if item is not None and self.tree.currentItem() is not item:
            self.tree.setCurrentItem(item)
        self._show_facts()

    def _current_changed(self, item, _previous) -> None:
        if item is None:
            return
        key = item.data(0, _KEY)
        if key:
            self.models.select(key)
        self._show_facts()
        self._update_estimate()

    def _current_ref(self) -> tuple[str, str] | None:
        item = self.tree.currentItem()
        return None if item is None else item.data(0, _REF)

    def _show_facts(self) -> None:
        item = self.tree.currentItem()
        entry = self.models.entry(item.data(0, _KEY)) if item is not None else None
        if entry is None:
            entry = self.models.selected()
        self.facts.set_facts(entry.facts if entry else None, _check_dict(entry))
        loaded = item is not None and bool(item.data(0, _KEY))
        self.unload_button.setEnabled(loaded)
        self.load_button.setEnabled(item is not None and item.data(0, _REF) is not None)

    def _update_estimate(self) -> None:
        ref = self._current_ref()
        if ref is None:
            self.estimate.setText("")
            return
        text, backend = ref
        chosen = _BACKENDS[self.backend.currentIndex()]
        est = estimate_load(text, chosen if chosen != "auto" else backend)
        if est.need_bytes is None:
            line = self.tr("Memory: {basis}; {free} free").format(basis=est.basis, free=mib(est.free_bytes))
        else:
            line = self.tr("Needs about {need} ({basis}); {free} of {device} memory free").format(
                need=mib(est.need_bytes), basis=est.basis, free=mib(est.free_bytes), device=est.device)
        self.estimate.setText(line)
        self.estimate.setStyleSheet("color: #b00020;" if est.fits is False else "color: palette(mid);")

    # -- actions ---------------------------------------------------------------------------
    def _chosen_backend(self, default: str = "auto") -> str:
        chosen = _BACKENDS[self.backend.currentIndex()]
        return default if chosen == "auto" else chosen

    def request_load(self, text: str, backend: str = "auto") -> str | None:
        """Load ``text`` after checking the estimate; a model that will not fit is refused
        here with the reason, before anything is loaded."""
        est = estimate_load(text, backend)
        if est.fits is False:
            self.context.runner.show_error(
                self.tr("Not enough memory"),
                self.tr("{name} needs about {need} of {device} memory ({basis}); {free} is free. "
                        "Unload a model or close other programs.").format(
                    name=display_name(text, backend), need=mib(est.need_bytes), device=est.device,
                    basis=est.basis, free=mib(est.free_bytes)))
            return None
        return self.models.load(text, backend)

    def _load_clicked(self) -> None:
        ref = self._current_ref()
        if ref is not None:
            self.request_load(ref[0], self._chosen_backend(ref[1]))

    def _double_clicked(self, item, _column) -> None:
        ref = item.data(0, _REF)
        if ref is not None:
            self.request_load(ref[0], self._chosen_backend(ref[1]))

    def _unload_clicked(self) -> None:
        item = self.tree.currentItem()
        if item is not None and item.data(0, _KEY):
            self.models.unload(item.data(0, _KEY))

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.tr("Open a model folder"))
        if folder:
            self.request_load(folder, self._chosen_backend())

    def choose_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.tr("Open a GGUF file"), "",
                                              self.tr("GGUF models (*.gguf);;All files (*)"))
        if path:
            self.request_load(path, self._chosen_backend())

    def _hub_text_changed(self, text: str) -> None:
        self.download.setEnabled(bool(HUB_ID.match(text.strip())))

    def _download_clicked(self) -> None:
        text = self.hub_id.text().strip()
        if not HUB_ID.match(text):
            self.context.runner.show_error(
                self.tr("Not a hub id"),
                self.tr("“{text}” is not a hub id: write ORG/NAME or ORG/NAME@revision.").format(text=text))
            return
        backend = self._chosen_backend()
        if backend == "llamacpp":
            backend = "auto"  # hub downloads are safetensors folders: transformers
        key = self.models.load(text, backend)
        if key is None or key in self._downloads:
            return
        entry = self.models.entry(key)
        if entry is None or entry.state != LOADING:
            return
        dialog = DownloadDialog(entry.name, self.window())
        dialog.cancel_requested.connect(lambda: self._cancel_load(key))
        self._downloads[key] = dialog
        dialog.show()

    def _cancel_load(self, key: str) -> None:
        job = self.models.job(key)
        if job is not None:
            job.cancel()

    def download_dialog(self, key: str) -> DownloadDialog | None:
        return self._downloads.get(key)

    def _context_menu(self, pos) -> None:
        item = self.tree.itemAt(pos)
        if item is None:
            return
        menu = QMenu(self)
        if item.data(0, _KEY):
            key = item.data(0, _KEY)
            menu.addAction(self.tr("Unload"), lambda: self.models.unload(key))
            if self.models.can_use_int8_activations(key):
                entry = self.models.entry(key)
                action = menu.addAction(self.tr("Decode with int8 activations (faster, approximate)"))
                action.setCheckable(True)
                action.setChecked(bool(entry.facts.quantization.get("int8_activations")))
                action.setToolTip(self.tr(
                    "Each decode step rounds the activations to int8 per 64 values and uses "
                    "integer dot products, as llama.cpp does: faster on the CPU, but no longer "
                    "the checkpoint's exact product. Prefills and comparisons stay exact."))
                action.toggled.connect(lambda on: self.models.set_int8_activations(key, on))
                menu.setToolTipsVisible(True)
        elif item.data(0, _REF):
            text, backend = item.data(0, _REF)
            menu.addAction(self.tr("Load"), lambda: self.request_load(text, self._chosen_backend(backend)))
            if text != "demo":
                menu.addAction(self.tr("Remove from the list"), lambda: self._forget(text, backend))
        menu.exec(self.tree.viewport().mapToGlobal(pos))

    def _forget(self, text: str, backend: str) -> None:
        self.context.settings.remove_recent(text, backend)
        self.refresh_available()

    def select_text(self, text: str, backend: str = "auto") -> bool:
        """Select a model by its argument (the screenshot script's ``select``)."""
        key = model_key(text, backend)
        if self.models.entry(key) is not None:
            self.models.select(key)
            return True
        return False


def _check_dict(entry):
    return None if entry is None else entry.self_check
