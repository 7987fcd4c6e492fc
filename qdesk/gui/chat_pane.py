"""A prompt box and a streaming reply, each token tinted by its top-1/top-2 margin.

Generation runs in a superqt generator worker: each yielded ``TokenEvent``
reaches this widget on the GUI thread; Stop sets the core's cancel event, so
the reply ends within one token.
"""

from __future__ import annotations

import html
import threading

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from qdesk.core.chat.events import ReplyDone, SamplingConfig, TokenEvent
from qdesk.core.chat.session import ChatSession, PaneDone, PaneToken
from qdesk.core.errors import QdeskError


def margin_color(margin: float) -> str:
    """Near ties (a flip needs only a small error) red, confident tokens green."""
    if margin < 0.1:
        return "#f8c4c4"
    if margin < 0.4:
        return "#fbe3b0"
    return "#d4f0d0"


class ChatPane(QWidget):
    reply_finished = Signal(object)  # ReplyDone
    chat_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session: ChatSession | None = None
        self._cancel = threading.Event()
        self._worker = None
        self.tokens: list[TokenEvent] = []

        self.transcript = QTextBrowser()
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Ask the model something…")
        self.prompt.setPlainText("What is the capital of France?")
        self.prompt.setMaximumHeight(70)
        self.send_button = QPushButton("Send")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.send_button.setEnabled(False)
        self.summary = QLabel("Token colour = top-1/top-2 margin: red < 0.1 ≤ amber < 0.4 ≤ green.")

        buttons = QHBoxLayout()
        buttons.addWidget(self.summary, 1)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.prompt)
        layout.addLayout(buttons)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)

    def set_model(self, backend) -> None:
        self._session = ChatSession([backend], SamplingConfig(max_new_tokens=200))
        self.send_button.setEnabled(True)

    def send(self) -> None:
        text = self.prompt.toPlainText().strip()
        if self._session is None or not text or self._worker is not None:
            return
        self._cancel.clear()
        self.tokens = []
        self.transcript.append(f"<p><b>You:</b> {html.escape(text)}</p><p><b>Model:</b> ")
        session, cancel = self._session, self._cancel

        def stream():
            yield from session.send(text, cancel)

        self._worker = create_worker(
            stream,
            _connect={"yielded": self._on_event, "errored": self._on_error,
                      "finished": self._on_finished},
        )
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(True)

    def stop(self) -> None:
        self._cancel.set()

    def _on_event(self, event) -> None:
        if isinstance(event, PaneToken):
            tok = event.event
            self.tokens.append(tok)
            if tok.text:
                fmt = QTextCharFormat()
                fmt.setBackground(QColor(margin_color(tok.margin)))
                fmt.setToolTip(
                    f"margin {tok.margin:.3f}, p {tok.p_token:.3f}, entropy {tok.entropy:.2f}"
                )
                cursor = self.transcript.textCursor()
                cursor.movePosition(QTextCursor.MoveOperation.End)
                cursor.insertText(tok.text, fmt)  # plain text: spaces and newlines kept
        elif isinstance(event, PaneDone):
            self._show_summary(event.reply)

    def _show_summary(self, reply: ReplyDone) -> None:
        near_ties = sum(1 for t in self.tokens if t.margin < 0.1)
        self.summary.setText(
            f"{reply.n_tokens} tokens ({reply.finish_reason}), "
            f"{reply.decode_tokens_per_second:.1f} tokens/s, "
            f"{near_ties} near ties (margin < 0.1)"
        )
        self.reply_finished.emit(reply)

    def _on_error(self, error: Exception) -> None:
        message = str(error) if isinstance(error, QdeskError) else f"{type(error).__name__}: {error}"
        self.summary.setText(message)
        self.chat_failed.emit(message)

    def _on_finished(self) -> None:
        self._worker = None
        self.send_button.setEnabled(self._session is not None)
        self.stop_button.setEnabled(False)
