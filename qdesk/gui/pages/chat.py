"""The chat page: 1–4 models side by side on one prompt, with live agreement.

Pane 0 is the reference; every other pane that shares its vocabulary gets
live agreement (flip, KLD, Δp) from core's ``ComparedSession``. Every action
(send, regenerate, continue from another token, follow the reference) is
planned on the GUI thread (the transcript gets its new branches), then run as
one job of the job runner on all the panes' models; token events arrive
throttled and are drawn incrementally, graphs redraw on their own timer.
Stop sets the session's cancel event: every pane ends at its next token with
its reply kept. When a job ends, the panes are drawn again from the
transcript, which is also what Save writes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from qdesk.core.chat.session import ChatSession, PaneDone, PaneFailed, PaneToken
from qdesk.core.compare.conversation_io import (
    SavedConversation,
    export_markdown,
    load_conversation,
    save_conversation,
)
from qdesk.core.compare.live import (
    ComparedDone,
    ComparedSession,
    ComparedToken,
    PaneNotice,
    ReverseScored,
)
from qdesk.core.errors import BadInput, QdeskError
from qdesk.gui.script import Wait
from qdesk.gui.widgets.inspector import Inspector
from qdesk.gui.widgets.margin_scale import MarginLegend
from qdesk.gui.widgets.pane_splitter import MAX_PANES, PaneSplitter
from qdesk.gui.widgets.reply_graphs import ReplyGraphs
from qdesk.gui.widgets.sampling_controls import SamplingControls

log = logging.getLogger(__name__)

STATS_TOP_K = 20  # the inspector shows up to 20
# Tokens reach the panes in batches, ten times a second: each delivery wakes the
# GUI thread, which then holds the GIL the chat's worker needs after every
# operation (measured on the 2-core machine, benchmarks/bench_chat_ui.py: the GUI
# chat's tokens/s against the CLI's rose with the interval up to about 0.1 s).
THROTTLE_MS = 100
# The live tok/s in a pane's header changes twice a second, not per token: each
# new figure is a repaint of the header on the GUI thread.
SPEED_LABEL_SECONDS = 0.5


def create_page(context) -> ChatPage:
    return ChatPage(context)


class ChatPage(QWidget):
    page_key = "chat"
    reply_finished = Signal(object)  # the reference pane's ReplyDone, when a job ends

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.models = context.models
        self.runner = context.runner
        self.pane_keys: list[str] = []
        self.session: ComparedSession | ChatSession | None = None
        self.transcript = None  # shown: the session's, or a loaded one
        self.saved_models: tuple[dict, ...] = ()  # a loaded conversation's models
        self.saved_pieces: list[dict] = []
        self.job = None
        self.cancel = threading.Event()
        self.last_error = ""
        self._speed: dict[int, list[float]] = {}  # pane -> [t_start, t_first, n]
        self._piece_cache: list[dict[int, str]] = [{} for _ in range(MAX_PANES)]

        # models of the panes
        self.pane_combos = [QComboBox() for _ in range(MAX_PANES)]
        self.models_label = QLabel()
        top = QHBoxLayout()
        top.addWidget(self.models_label)
        for c in self.pane_combos:
            c.setMinimumContentsLength(10)
            c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            top.addWidget(c, 1)
            c.activated.connect(lambda _=0: self._combos_changed())
        self.legend = MarginLegend()

        self.splitter = PaneSplitter()
        self.panes = self.splitter.panes
        for p in self.panes:
            p.view.token_clicked.connect(lambda turn, i, pane=p.index: self.inspect(pane, i, turn))
            p.reference_requested.connect(self.make_reference)
            p.version_requested.connect(self.select_version)
        self.graphs = ReplyGraphs()
        self.graphs.token_clicked.connect(lambda pane, i: self.inspect(pane, i, highlight=True))
        self.inspector = Inspector()
        self.inspector.closed.connect(lambda: self.inspector_area.setVisible(False))
        self.inspector.continue_requested.connect(self.continue_from)
        self.inspector.follow_requested.connect(self.follow_reference)

        self.vertical = QSplitter(Qt.Orientation.Vertical)
        self.vertical.addWidget(self.splitter)
        self.vertical.addWidget(self.graphs)
        self.vertical.setStretchFactor(0, 3)
        self.vertical.setStretchFactor(1, 1)
        self.horizontal = QSplitter(Qt.Orientation.Horizontal)
        self.horizontal.addWidget(self.vertical)
        # The inspector scrolls rather than making the window taller than the screen.
        self.inspector_area = QScrollArea()
        self.inspector_area.setWidget(self.inspector)
        self.inspector_area.setWidgetResizable(True)
        self.inspector_area.setFrameShape(QScrollArea.Shape.NoFrame)
        self.inspector_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.inspector_area.setMinimumWidth(280)
        self.inspector_area.setVisible(False)
        self.horizontal.addWidget(self.inspector_area)
        self.horizontal.setStretchFactor(0, 3)
        self.horizontal.setStretchFactor(1, 1)

        self.prompt = QPlainTextEdit()
        self.prompt.setMaximumHeight(64)
        self.send_button = QPushButton()
        self.stop_button = QPushButton()
        self.regenerate_button = QPushButton()
        self.new_button = QPushButton()
        self.send_button.setDefault(True)
        buttons = QVBoxLayout()
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        row1.addWidget(self.send_button)
        row1.addWidget(self.stop_button)
        row2.addWidget(self.regenerate_button)
        row2.addWidget(self.new_button)
        buttons.addLayout(row1)
        buttons.addLayout(row2)
        entry = QHBoxLayout()
        entry.addWidget(self.prompt, 1)
        entry.addLayout(buttons)

        self.sampling = SamplingControls()
        self.plain = QCheckBox()
        # Files: one menu button, so the row stays narrow in a small window.
        # A push button: it keeps room for its menu arrow (a QToolButton drew the
        # arrow over the last letters).
        self.files_button = QPushButton()
        self.files_menu = QMenu(self)
        self.file_actions = {what: self.files_menu.addAction("") for what in
                             ("save", "load", "markdown", "png", "csv")}
        self.files_button.setMenu(self.files_menu)
        files = QHBoxLayout()
        files.addWidget(self.legend, 1)
        files.addWidget(self.plain)
        files.addWidget(self.files_button)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color:#555;")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addWidget(self.horizontal, 1)
        layout.addLayout(files)
        layout.addLayout(entry)
        layout.addWidget(self.sampling)
        layout.addWidget(self.status)

        self.send_button.clicked.connect(lambda: self.send())
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.new_button.clicked.connect(self.new_chat)
        self.plain.toggled.connect(lambda on: [p.view.set_plain(on) for p in self.panes])
        for what, action in self.file_actions.items():
            action.triggered.connect(lambda _=False, w=what: self._ask_path(w))

        self.models.changed.connect(self._model_changed)
        self.models.removed.connect(self._model_removed)
        context.chat_requested.connect(self.set_models)
        self._register_script_actions()
        self.retranslate()
        self._fill_combos()
        self._update_buttons()

    # -- the window's contract --
    def page_title(self) -> str:
        return self.tr("Chat")

    def run_action(self) -> None:
        self.send()

    def cancel_action(self) -> None:
        self.stop()

    def save_state(self) -> None:
        self.shutdown()

    # -- texts --
    def retranslate(self) -> None:
        self.models_label.setText(self.tr("Panes:"))
        self.models_label.setToolTip(self.tr("The model of each pane; the first is the reference."))
        self.prompt.setPlaceholderText(self.tr("A message to every pane… (Ctrl+Enter sends)"))
        self.send_button.setText(self.tr("Send"))
        self.stop_button.setText(self.tr("Stop"))
        self.stop_button.setToolTip(self.tr("End every pane's reply at its next token (kept)."))
        self.regenerate_button.setText(self.tr("Regenerate"))
        self.regenerate_button.setToolTip(self.tr(
            "Answer the last message again in every pane (the next seed); the earlier replies "
            "stay as versions."))
        self.new_button.setText(self.tr("New chat"))
        self.plain.setText(self.tr("Plain text"))
        self.plain.setToolTip(self.tr("Show the replies without margin colours and flip marks."))
        self.files_button.setText(self.tr("Conversation"))
        self.files_button.setToolTip(self.tr("Save, load and export the conversation and its graphs."))
        a = self.file_actions
        a["save"].setText(self.tr("Save with every token's statistics (JSON)…"))
        a["load"].setText(self.tr("Load a saved conversation…"))
        a["markdown"].setText(self.tr("Export as Markdown…"))
        a["png"].setText(self.tr("Save the graphs as PNG…"))
        a["csv"].setText(self.tr("Save the graphs' numbers as CSV…"))
        for c in self.pane_combos:
            c.setToolTip(self.tr("A loaded model for this pane (— for none)."))
        self._fill_combos()
        if self.job is None and self.transcript is not None:
            self._render_all()  # footers and notes too ("48 tokens (at the limit)")
        else:
            self._draw_headers()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)

    def keyPressEvent(self, event) -> None:
        if (event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                and event.modifiers() & Qt.KeyboardModifier.ControlModifier):
            self.send()
            return
        super().keyPressEvent(event)

    # -- models of the panes --
    def _model_changed(self, key: str) -> None:
        self._fill_combos()
        if key in self.pane_keys:  # its facts changed (e.g. int8 activations switched)
            self._draw_headers()

    def _fill_combos(self) -> None:
        ready = self.models.ready()
        for i, combo in enumerate(self.pane_combos):
            combo.blockSignals(True)
            combo.clear()
            combo.addItem("—", "")
            for e in ready:
                combo.addItem(e.name, e.key)
            want = self.pane_keys[i] if i < len(self.pane_keys) else ""
            combo.setCurrentIndex(max(0, combo.findData(want)))
            combo.blockSignals(False)
        if not self.pane_keys and ready and self.transcript is None:
            self.set_models([ready[0].key])

    def _combos_changed(self) -> None:
        keys = [c.currentData() for c in self.pane_combos if c.currentData()]
        self.set_models(keys)

    def set_models(self, keys: list[str]) -> bool:
        """Bind the panes to these loaded models (the reference first); a new chat."""
        keys = [k for k in keys if k][:MAX_PANES]
        if keys == self.pane_keys:
            return True
        if self.job is not None:
            self._say(self.tr("Stop the running reply before changing the models."))
            self._fill_combos()
            return False
        if len(set(keys)) != len(keys):
            self._say(self.tr(
                "A model can be in one pane only: load it once more for another pane."))
            self._fill_combos()
            return False
        # A loaded conversation stays when models are chosen for all its panes:
        # the next message continues it.
        keep = (self.session is None and self.transcript is not None and bool(self.saved_models)
                and len(keys) == self.transcript.n_panes)
        self._close_session()
        self.pane_keys = keys
        if not keep:
            self.transcript = None
            self.saved_models = ()
            self.saved_pieces = []
        self._piece_cache = [{} for _ in range(MAX_PANES)]
        self._fill_combos()
        self.splitter.set_count(max(1, len(keys)))
        self.graphs.set_panes([self._pane_name(i) for i in range(max(1, len(keys)))])
        self.inspector_area.setVisible(False)
        self._render_all()
        self._update_buttons()
        return True

    def make_reference(self, pane: int) -> None:
        if 0 < pane < len(self.pane_keys):
            keys = list(self.pane_keys)
            keys.insert(0, keys.pop(pane))
            self.set_models(keys)

    def _entries(self):
        return [self.models.entry(k) for k in self.pane_keys]

    def _pane_name(self, i: int) -> str:
        if i < len(self.pane_keys):
            e = self.models.entry(self.pane_keys[i])
            if e is not None:
                return e.name
        if i < len(self.saved_models):
            return str(self.saved_models[i].get("name", f"pane {i + 1}"))
        return self.tr("pane {n}").format(n=i + 1)

    def _model_removed(self, key: str) -> None:
        if key not in self.pane_keys:
            self._fill_combos()
            return
        pane = self.pane_keys.index(key)
        if self.job is not None and self.session is not None:
            self.session.detach(pane, self.tr("the model was unloaded"))
            return
        self.set_models([k for k in self.pane_keys if k != key])

    def _close_session(self) -> None:
        if isinstance(self.session, ComparedSession):
            try:
                self.session.close_scorers()
            except Exception:
                log.exception("closing the scorers")
        self.session = None

    def _ensure_session(self):
        if self.session is not None:
            return self.session
        entries = self._entries()
        if not entries or any(e is None or e.loaded is None for e in entries):
            raise BadInput(self.tr("Choose a loaded model for every pane first."))
        backends = [e.loaded.backend for e in entries]
        transcript = self.transcript if (
            self.transcript is not None and self.transcript.n_panes == len(backends)) else None
        sampling = self.sampling.config(STATS_TOP_K)
        system = self.sampling.system_prompt()
        if len(backends) == 1:
            self.session = ChatSession(backends, sampling, system, transcript)
        else:
            self.session = ComparedSession(backends[0], backends[1:], sampling, system,
                                           transcript=transcript)
        self.transcript = self.session.transcript
        return self.session

    def _chat(self) -> ChatSession:
        s = self.session
        return s.session if isinstance(s, ComparedSession) else s

    # -- actions --
    def send(self, text: str | None = None) -> bool:
        text = self.prompt.toPlainText() if text is None else text
        if not text.strip():
            return False
        if self._start(lambda: self._chat().start_turn(text), self.tr("Chat")):
            self.prompt.clear()
            return True
        return False

    def regenerate(self) -> bool:
        return self._start(lambda: self._chat().start_regenerate(), self.tr("Regenerate"))

    def continue_from(self, pane: int, index: int, token: int) -> bool:
        return self._start(lambda: [self._chat().start_branch(pane, index, token)],
                           self.tr("Continue from another token"))

    def follow_reference(self, pane: int, index: int) -> bool:
        def plan():
            if not isinstance(self.session, ComparedSession):
                raise BadInput(self.tr("Following the reference needs two or more panes."))
            token = self.session.reference_choice(pane, index)
            return [self._chat().start_branch(pane, index, token, kind="follow")]

        return self._start(plan, self.tr("Follow the reference"))

    def stop(self) -> None:
        self.cancel.set()

    def new_chat(self) -> None:
        if self.job is not None:
            return
        if self.session is not None:
            self._chat().new_chat()
        else:
            self.transcript = None
            self.saved_models = ()
        self.inspector_area.setVisible(False)
        self._render_all()
        self._update_buttons()

    def select_version(self, pane: int, branch: int) -> None:
        if self.job is not None or self.transcript is None or not self.transcript.turns:
            return
        self.transcript.turns[-1].panes[pane].active = branch
        self._render_all()

    def _start(self, plan, title: str) -> bool:
        """Plan on the GUI thread, then run the jobs in the runner."""
        if self.job is not None:
            return False
        for key in self.pane_keys:
            holder = self.runner.busy_job(key)
            if holder is not None:
                self.last_error = self.tr(
                    "{model} is in use by “{job}”. Wait for it to finish or cancel it first."
                ).format(model=self.models.entry(key).name, job=holder.title)
                self.runner.show_error(self.tr("Busy"), self.last_error)
                return False
        try:
            session = self._ensure_session()
            session.sampling = self.sampling.config(STATS_TOP_K)
            self._chat().system = self.sampling.system_prompt()
            jobs = plan()
        except QdeskError as e:
            self.last_error = str(e)
            self.runner.show_error(self.tr("Chat"), str(e))
            return False
        self.cancel = threading.Event()
        cancel = self.cancel
        self._render_all(live={j.pane for j in jobs})
        now = time.perf_counter()
        self._speed = {j.pane: [now, 0.0, 0, 0.0] for j in jobs}  # start, first token, count, shown
        self.job = self.runner.start(
            title, lambda: session.run(jobs, cancel), models=tuple(self.pane_keys),
            on_event=self._on_event, on_done=lambda _v: self._ended(), on_failed=self._failed,
            on_cancelled=self._ended, throttle_ms=THROTTLE_MS,
        )
        if self.job is not None:
            names = ", ".join(self._pane_name(i) for i in range(len(self.pane_keys)))
            self.job.set_status(self.tr("chatting with {names}").format(names=names))
        self._update_buttons()
        return self.job is not None

    # -- events (GUI thread, in order) --
    def _on_event(self, ev) -> None:
        if isinstance(ev, (ComparedToken, PaneToken)):
            a = getattr(ev, "agreement", None)
            top = getattr(ev, "ref_top", None)
            turn = len(self.transcript.turns) - 1
            pane = self.panes[ev.pane]
            pane.view.add_token(turn, ev.event, a, top)
            self.graphs.add_token(ev.pane, ev.event.index, ev.event.margin,
                                  a.kld if a is not None else None, bool(a is not None and a.flip))
            sp = self._speed.get(ev.pane)
            if sp is not None:
                now = time.perf_counter()
                if sp[2] == 0:
                    sp[1] = now
                sp[2] += 1
                if sp[2] == 1 or now - sp[3] >= SPEED_LABEL_SECONDS:
                    sp[3] = now
                    tps = (sp[2] - 1) / (now - sp[1]) if sp[2] > 1 and now > sp[1] else None
                    pane.set_speed(tps, sp[1] - sp[0])
        elif isinstance(ev, (ComparedDone, PaneDone)):
            r = ev.reply
            self.panes[ev.pane].set_speed(r.decode_tokens_per_second, r.first_token_seconds)
        elif isinstance(ev, PaneFailed):
            self.panes[ev.pane].view.add_note(self.tr("Stopped: {why}").format(why=ev.message))
        elif isinstance(ev, PaneNotice):
            if ev.pane is not None and ev.pane < len(self.panes):
                self.panes[ev.pane].view.add_note(ev.message)
            else:
                self._say(ev.message)
        elif isinstance(ev, ReverseScored):
            pass  # in the transcript already; drawn with the summary when the job ends

    def _failed(self, message: str) -> None:
        self.last_error = message
        self._ended()

    def _ended(self) -> None:
        self.job = None
        gone = [k for k in self.pane_keys if self.models.entry(k) is None]
        if gone:  # unloaded while the reply ran: the pane keeps what it wrote
            self._say(self.tr("A model was unloaded; choose the panes' models again to go on."))
        self._render_all()
        self._update_buttons()
        t = self.transcript
        if t is not None and t.turns:
            self.reply_finished.emit(t.turns[-1].panes[0].current.reply)

    # -- drawing from the transcript --
    def _render_all(self, live: set[int] | None = None) -> None:
        """Every pane from the transcript; panes in ``live`` end with an open
        reply that the token events extend."""
        n = len(self.pane_keys) or (self.transcript.n_panes if self.transcript else 1)
        if self.splitter.count_shown != n:
            self.splitter.set_count(n)
        if len(self.graphs.series) != n:
            self.graphs.set_panes([self._pane_name(i) for i in range(n)])
        self._draw_headers()
        t = self.transcript
        turns = t.turns if t is not None else []
        for i in range(n):
            view = self.panes[i].view
            view.piece = self._piece_fn(i)
            view.clear_all()
            for ti, turn in enumerate(turns):
                view.add_user(turn.prompt)
                view.begin_reply(ti)
                b = turn.panes[i].current
                for ev, a, top in zip(b.tokens, b.agreements, b.ref_top):
                    view.add_token(ti, ev, a, top)
                if b.error and not (live and i in live and ti == len(turns) - 1):
                    view.add_note(self.tr("Stopped: {why}").format(why=b.error))
            last = turns[-1].panes[i] if turns else None
            self.panes[i].set_versions(last.active if last else 0,
                                       len(last.branches) if last else 1)
            self._draw_summary(i, last.current if last else None)
            if last is not None:
                b = last.current
                self.graphs.set_reply(i, [e.margin for e in b.tokens],
                                      [a.kld if a is not None else None for a in b.agreements],
                                      [bool(a is not None and a.flip) for a in b.agreements])
            else:
                self.graphs.set_reply(i, [], [], [])

    def _draw_headers(self) -> None:
        for i, p in enumerate(self.panes):
            entry = self.models.entry(self.pane_keys[i]) if i < len(self.pane_keys) else None
            facts = entry.facts if entry is not None else None
            p.set_model(self._pane_name(i), facts, i == 0)
            if entry is None and i < len(self.saved_models):
                p.details.setText(self.tr("saved conversation (model not loaded)"))

    def _draw_summary(self, i: int, b) -> None:
        pane = self.panes[i]
        if b is None:
            pane.summary.setText("")
            return
        parts = [self.tr("{n} tokens").format(n=len(b.tokens))]
        if b.reply is not None:
            reasons = {"end": self.tr("end"), "length": self.tr("at the limit"),
                       "stop": self.tr("stop string"), "cancelled": self.tr("stopped")}
            parts[0] += f" ({reasons.get(b.reply.finish_reason, b.reply.finish_reason)})"
        s = b.summary
        if s is not None:
            parts.append(self.tr("flips {f} ({r:.1f}%)").format(f=s.flips, r=100 * s.flip_rate))
            parts.append(self.tr("mean KLD {k:.4f}").format(k=s.mean_kld))
            if s.first_divergence is not None:
                parts.append(self.tr("paths part at token {i}").format(i=s.first_divergence))
        if b.kind != "reply":
            kinds = {"regenerated": self.tr("regenerated"),
                     "alternative": self.tr("another token at {i}").format(i=b.point),
                     "follow": self.tr("follows the reference at {i}").format(i=b.point)}
            parts.append(kinds[b.kind])
        pane.summary.setText(" · ".join(parts))
        if b.reverse is not None:
            pane.summary.setToolTip(self.tr(
                "The reference's reply scored under this model: mean KLD {k:.4f}, "
                "same top-1 {s:.1f}%").format(k=b.reverse.mean_kld, s=100 * b.reverse.same_top_p))

    def _piece_fn(self, pane: int):
        cache = self._piece_cache[pane]
        entry = self.models.entry(self.pane_keys[pane]) if pane < len(self.pane_keys) else None
        saved = self.saved_pieces[pane] if pane < len(self.saved_pieces) else {}
        tokenizer = entry.loaded.backend.tokenizer if entry is not None and entry.loaded else None

        def piece(token_id: int) -> str:
            if tokenizer is None:
                return str(saved.get(str(token_id), f"#{token_id}"))
            if token_id not in cache:
                try:
                    cache[token_id] = tokenizer.piece(int(token_id))
                except Exception:  # a tokenizer that cannot name an id: show the id
                    cache[token_id] = f"#{token_id}"
            return cache[token_id]

        return piece

    # -- inspector --
    def inspect(self, pane: int, index: int, turn: int | None = None,
                highlight: bool = False) -> bool:
        view = self.panes[pane].view
        last_turn = len(self.transcript.turns) - 1 if self.transcript and self.transcript.turns else 0
        turn = last_turn if turn is None else turn
        data = view.token_data(turn, index)
        if data is None:
            return False
        if highlight:
            view.highlight(turn, index)
        can_branch = (self.job is None and turn == last_turn and pane < len(self.pane_keys)
                      and all(e is not None and e.loaded is not None for e in self._entries()))
        self.inspector.piece = self._piece_fn(pane)
        self.inspector.show_token(pane, turn, data[0], data[1], data[2], can_branch,
                                  self._pane_name(pane))
        self.inspector_area.setVisible(True)
        return True

    # -- files --
    def _ask_path(self, what: str) -> None:
        titles = {
            "save": (self.tr("Save the conversation"), "JSON (*.json)", True),
            "load": (self.tr("Load a conversation"), "JSON (*.json)", False),
            "markdown": (self.tr("Export as Markdown"), "Markdown (*.md)", True),
            "png": (self.tr("Save the graphs as PNG"), "PNG (*.png)", True),
            "csv": (self.tr("Save the graphs' data as CSV"), "CSV (*.csv)", True),
        }
        title, pattern, saving = titles[what]
        ask = QFileDialog.getSaveFileName if saving else QFileDialog.getOpenFileName
        path, _ = ask(self, title, "", pattern)
        if path:
            self.file_action(what, Path(path))

    def file_action(self, what: str, path: Path) -> bool:
        try:
            if what == "save":
                save_conversation(path, self.saved())
            elif what == "markdown":
                export_markdown(path, self.saved())
            elif what == "load":
                self.load(path)
            elif what == "png":
                self.graphs.save_png(path)
            elif what == "csv":
                self.graphs.save_csv(path)
        except QdeskError as e:
            self.runner.show_error(self.tr("Chat"), str(e))
            return False
        except OSError as e:
            self.runner.show_error(self.tr("Chat"), f"{path}: {e.strerror or e}")
            return False
        self._say(self.tr("Loaded {path}").format(path=path) if what == "load"
                  else self.tr("Wrote {path}").format(path=path))
        return True

    def saved(self) -> SavedConversation:
        if self.transcript is None or not self.transcript.turns:
            raise BadInput(self.tr("There is no conversation to save yet."))
        if self.job is not None:
            raise BadInput(self.tr("Wait for the reply to finish (or Stop it) first."))
        models, pieces = [], []
        for i in range(self.transcript.n_panes):
            entry = self.models.entry(self.pane_keys[i]) if i < len(self.pane_keys) else None
            if entry is not None and entry.facts is not None:
                models.append({**entry.facts.to_json(), "name": entry.name})
            elif i < len(self.saved_models):
                models.append(dict(self.saved_models[i]))
            else:
                models.append({"name": self._pane_name(i)})
            fn, ids = self._piece_fn(i), set()
            for turn in self.transcript.turns:
                for b in turn.panes[i].branches:
                    for ev, top in zip(b.tokens, b.ref_top):
                        ids.update(ev.top_ids)
                        ids.add(ev.token_id)
                        if top is not None:
                            ids.update(top.top_ids)
            pieces.append({str(k): fn(k) for k in sorted(ids)})
        return SavedConversation(self.transcript, self.sampling.config(STATS_TOP_K),
                                 tuple(models), {"pieces": pieces})

    def load(self, path: Path) -> None:
        if self.job is not None:
            raise BadInput(self.tr("Wait for the reply to finish (or Stop it) first."))
        saved = load_conversation(path)
        self._close_session()
        n = saved.transcript.n_panes
        if len(self.pane_keys) != n:
            self.pane_keys = []  # shown as saved; choose models to continue it
        self.transcript = saved.transcript
        self.saved_models = saved.models
        pieces = saved.extra.get("pieces", [])
        self.saved_pieces = [p if isinstance(p, dict) else {} for p in pieces] \
            if isinstance(pieces, list) else []
        self._piece_cache = [{} for _ in range(MAX_PANES)]
        self.sampling.set_config(saved.sampling, saved.transcript.system)
        self._fill_combos()
        self.splitter.set_count(n)
        self.graphs.set_panes([self._pane_name(i) for i in range(n)])
        self.inspector_area.setVisible(False)
        self._render_all()
        self._update_buttons()

    # -- state --
    def _update_buttons(self) -> None:
        running = self.job is not None
        bound = bool(self.pane_keys)
        has_turn = bool(self.transcript and self.transcript.turns)
        self.send_button.setEnabled(not running and bound)
        self.stop_button.setEnabled(running)
        self.regenerate_button.setEnabled(not running and bound and has_turn)
        self.new_button.setEnabled(not running and has_turn)
        for what in ("save", "markdown"):
            self.file_actions[what].setEnabled(not running and has_turn)
        self.file_actions["load"].setEnabled(not running)
        for c in self.pane_combos:
            c.setEnabled(not running)
        if self.inspector_area.isVisible() and self.inspector.token is not None:
            self.inspector.can_branch = not running
            self.inspector.redraw()

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def shutdown(self) -> None:
        """The window closes: stop the reply, free the scorers."""
        self.cancel.set()
        if self.job is None:
            self._close_session()

    # -- screenshot mode --
    def _register_script_actions(self) -> None:
        reg = self.context.script.register
        reg("chat.models", self._script_models, "chat.models MODEL [MODEL ...]: the panes' models")
        reg("chat.send", self._script_send, "chat.send TEXT [max_new_tokens=N]: send and wait")
        reg("chat.inspect", self._script_inspect, "chat.inspect PANE INDEX: open the inspector")
        reg("chat.follow", self._script_follow, "chat.follow PANE INDEX: follow the reference")
        reg("chat.plain", lambda on="on": self.plain.setChecked(on == "on"), "chat.plain on|off")
        reg("chat.widen", lambda pane: self.splitter.toggle_widen(int(pane)), "chat.widen PANE")
        reg("chat.graph_heights", self._script_heights, "chat.graph_heights PANES GRAPHS")

    def _find_key(self, text: str) -> str:
        for e in self.models.entries():
            if text in (e.key, e.text, e.name):
                return e.key
        raise BadInput(f"chat.models: {text} is not loaded (load it first)")

    def _script_models(self, *models: str) -> None:
        if not models:
            raise BadInput("chat.models needs at least one model")
        if not self.set_models([self._find_key(m) for m in models]):
            raise BadInput(f"chat.models: {self.status.text()}")

    def _wait_job(self, what: str) -> Wait:
        return Wait(until=lambda: self.job is None, what=what,
                    failed=lambda: self.last_error or None)

    def _script_send(self, *words: str, max_new_tokens: str | None = None) -> Wait:
        if max_new_tokens is not None:
            self.sampling.max_new.setValue(int(max_new_tokens))
        self.last_error = ""
        if not self.send(" ".join(words)):
            raise BadInput(f"chat.send: the message could not be sent ({self.last_error})")
        return self._wait_job("the replies")

    def _script_inspect(self, pane: str, index: str) -> None:
        if not self.inspect(int(pane), int(index), highlight=True):
            raise BadInput(f"chat.inspect: pane {pane} has no token {index}")

    def _script_follow(self, pane: str, index: str) -> Wait:
        self.last_error = ""
        if not self.follow_reference(int(pane), int(index)):
            raise BadInput(f"chat.follow: cannot follow the reference there ({self.last_error})")
        return self._wait_job("the branch")

    def _script_heights(self, panes: str, graphs: str) -> None:
        self.vertical.setSizes([int(panes), int(graphs)])
