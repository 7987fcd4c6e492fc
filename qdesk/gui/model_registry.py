"""The loaded models of the session: what every page reads, one place that loads.

An entry is plain data (``ModelEntry``, replaced on every change); the registry
emits ``changed(key)`` when an entry is added or changes state and
``removed(key)`` when it is unloaded. Loading runs through the job runner (one
job per model, so no other job uses a model while it loads); a failure marks
only that entry failed, the others stay usable.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from qdesk.core.errors import QdeskError
from qdesk.core.models import open_model, resolve

log = logging.getLogger(__name__)

# transformers' top-level package is a lazy module whose first imports are not
# thread-safe: two loads starting together in two workers failed with "cannot
# import name 'AutoConfig'" (one thread saw the other's half-imported module).
# So the first load of each backend in the process runs alone, holding this
# lock for its whole length (it imports everything a load needs); the loads
# after it run concurrently.
_FIRST_LOAD = threading.Lock()
_warmed_backends: set[str] = set()


def open_model_safely(text: str, backend: str = "auto", **kwargs):
    """``open_model`` for a worker thread: the first load of a backend (``hf``
    or ``llamacpp``) waits for no one but runs alone; later ones are concurrent."""
    kind = "llamacpp" if backend == "llamacpp" or (
        backend == "auto" and text.strip().lower().endswith(".gguf")) else "hf"
    if kind in _warmed_backends:
        return open_model(text, backend=backend, **kwargs)
    with _FIRST_LOAD:
        loaded = open_model(text, backend=backend, **kwargs)
        # Only a load that succeeded is known to have imported everything; after
        # a failure the next load runs alone again.
        _warmed_backends.add(kind)
        return loaded

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass(frozen=True)
class LoadProgress:
    """A progress report of ``open_model`` (preparing the demo, downloading)."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class ModelEntry:
    key: str  # unique in the registry
    text: str  # the model argument open_model gets
    backend: str  # as asked: auto | hf | llamacpp
    name: str  # shown to the user
    state: str = LOADING
    loaded: object = None  # a core LoadedModel once ready
    error: str = ""
    progress: LoadProgress | None = None
    origin: str = ""  # e.g. the entry a quantized model was made from
    self_check: object = None  # the quantization job's SelfCheck, for a model made here

    @property
    def facts(self):
        return None if self.loaded is None else self.loaded.facts

    @property
    def is_quantized(self) -> bool:
        facts = self.facts
        return bool(facts is not None and facts.quantization)


def model_key(text: str, backend: str = "auto") -> str:
    """The same model asked twice gets the same key (paths are made absolute)."""
    text = text.strip()
    try:
        ref = resolve(text)
    except QdeskError:
        ref = None
    if ref is not None and ref.path is not None:
        text = str(Path(ref.path).expanduser().resolve())
    return text if backend == "auto" else f"{text} [{backend}]"


def display_name(text: str, backend: str = "auto") -> str:
    try:
        name = resolve(text).display_name
    except QdeskError:
        name = text
    return name if backend in ("auto", "hf") else f"{name} · llama.cpp"


class ModelRegistry(QObject):
    changed = Signal(str)  # key: added or changed state
    removed = Signal(str)  # key
    selection_changed = Signal(str)  # key ("" for none)
    loaded = Signal(str)  # key: a load finished successfully
    # A loaded model was closed; the argument is a weak reference to what held its
    # weights (or None), so the collector can tell whether anything is left to free.
    released = Signal(object)

    def __init__(self, runner, settings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._settings = settings
        self._entries: dict[str, ModelEntry] = {}
        self._jobs: dict = {}
        self.selected_key = ""
        runner.model_name = lambda key: self._entries[key].name if key in self._entries else key

    # -- reading ---------------------------------------------------------------------
    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def entry(self, key: str) -> ModelEntry | None:
        return self._entries.get(key)

    def ready(self) -> list[ModelEntry]:
        return [e for e in self._entries.values() if e.state == READY]

    def selected(self) -> ModelEntry | None:
        return self._entries.get(self.selected_key)

    def find(self, text: str, backend: str = "auto") -> ModelEntry | None:
        return self._entries.get(model_key(text, backend))

    # -- changing --------------------------------------------------------------------
    def select(self, key: str) -> None:
        if key != self.selected_key and (key in self._entries or key == ""):
            self.selected_key = key
            self.selection_changed.emit(key)

    def load(self, text: str, backend: str = "auto", *, name: str | None = None,
             origin: str = "", dtype: str | None = None, self_check=None,
             select: bool = True) -> str | None:
        """Start loading ``text``; returns its key (already there: not reloaded).
        ``select``: make it the sidebar's selection."""
        text = text.strip()
        key = model_key(text, backend)
        current = self._entries.get(key)
        if current is not None and current.state != FAILED:
            if select:
                self.select(key)
            return key
        entry = ModelEntry(key, text, backend, name or display_name(text, backend), origin=origin,
                           self_check=self_check)
        self._entries[key] = entry
        self.changed.emit(key)
        if select:
            self.select(key)
        job = self._runner.start_call(
            lambda: self.tr("Loading {name}").format(name=entry.name),
            lambda report: open_model_safely(
                text, backend=backend, dtype=dtype,
                progress=lambda stage, done, total: report(LoadProgress(stage, done, total)),
            ),
            models=(key,),
            on_event=lambda p: self._progressed(key, p),
            on_done=lambda loaded: self._loaded(key, loaded),
            on_failed=lambda message: self._failed(key, message),
            on_cancelled=lambda: self._cancelled(key),
        )
        if job is None:  # refused: said so; nothing is loading
            del self._entries[key]
            self.removed.emit(key)
            return None
        self._jobs[key] = job
        job.finished.connect(lambda: self._jobs.pop(key, None))
        job.set_status(self.tr("loading {name}").format(name=entry.name))
        return key

    def job(self, key: str):
        """The job loading ``key``, while it runs."""
        return self._jobs.get(key)

    def reload(self, key: str) -> None:
        """Load an entry again from disk (its in-memory weights were changed)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        self._close(entry)
        del self._entries[key]
        self.load(entry.text, entry.backend, name=entry.name, origin=entry.origin,
                  self_check=entry.self_check, select=False)

    def can_use_int8_activations(self, key: str) -> bool:
        """Whether the entry is a loaded packed model the int8-activation switch
        changes (``LoadedModel.can_use_int8_activations``)."""
        entry = self._entries.get(key)
        return entry is not None and entry.state == READY and entry.loaded.can_use_int8_activations()

    def set_int8_activations(self, key: str, on: bool) -> bool:
        """Switch a packed model's decode steps to int8 activations or back
        (``LoadedModel.set_int8_activations``); refused (with a dialog) while a
        job uses the model, so no reply mixes the two."""
        entry = self._entries.get(key)
        if entry is None or entry.state != READY:
            return False
        holder = self._runner.busy_job(key)
        if holder is not None:
            self._runner.show_error(
                self.tr("Busy"),
                self.tr("{model} is in use by “{job}”; its decoding can be switched when that "
                        "ends.").format(model=entry.name, job=holder.title),
            )
            return False
        if not entry.loaded.set_int8_activations(on):
            return False
        self._entries[key] = replace(entry)  # a new entry: the facts changed
        self.changed.emit(key)
        return True

    def unload(self, key: str) -> bool:
        """Free a model's memory; refused (with a dialog) while a job uses it."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        holder = self._runner.busy_job(key)
        if holder is not None:
            self._runner.show_error(
                self.tr("Busy"),
                self.tr("{model} is in use by “{job}”; it can be unloaded when that ends.")
                .format(model=entry.name, job=holder.title),
            )
            return False
        self._close(entry)
        del self._entries[key]
        if self.selected_key == key:
            self.select(next(iter(self._entries), ""))
        self.removed.emit(key)
        return True

    def close_all(self) -> None:
        for entry in list(self._entries.values()):
            self._close(entry)
        self._entries.clear()

    # -- job callbacks (GUI thread) -----------------------------------------------------
    def _progressed(self, key: str, progress: LoadProgress) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = replace(entry, progress=progress)
            self.changed.emit(key)

    def _loaded(self, key: str, loaded) -> None:
        entry = self._entries.get(key)
        if entry is None:  # unloaded meanwhile: nobody wants it
            held = _weak(loaded)
            loaded.close()
            self.released.emit(held)
            return
        name = entry.name if entry.origin else loaded.facts.name
        if entry.backend == "llamacpp" and "llama.cpp" not in name:
            name = f"{name} · llama.cpp"
        self._entries[key] = replace(entry, state=READY, loaded=loaded, name=name, progress=None)
        self._settings.add_recent(entry.text, entry.backend, name)
        self.changed.emit(key)
        self.loaded.emit(key)

    def _failed(self, key: str, message: str) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = replace(entry, state=FAILED, error=message, progress=None)
            self.changed.emit(key)

    def _cancelled(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            if self.selected_key == key:
                self.select(next(iter(self._entries), ""))
            self.removed.emit(key)

    def _close(self, entry: ModelEntry) -> None:
        if entry.loaded is not None:
            held = _weak(entry.loaded)
            try:
                entry.loaded.close()
            except Exception:  # freeing memory must not take the app down
                log.exception("closing %s", entry.name)
            self.released.emit(held)


def _weak(loaded):
    """A weak reference to the object that holds a loaded model's weights (the
    torch module, or the llama.cpp model), or None where it takes none."""
    try:
        return weakref.ref(loaded.model)
    except TypeError:
        return None
