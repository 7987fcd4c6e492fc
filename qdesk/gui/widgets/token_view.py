"""One pane's conversation, each reply token tinted by its top-1/top-2 margin.

A flip (this model's top-1 differs from the reference's on the same prefix)
is bold, red and underlined. Hovering a token shows its top-k with
probabilities and, in a compared pane, the reference's top-k on the same
prefix, the KLD and Δp; clicking it emits ``token_clicked`` (the page opens
the inspector). A toggle shows the plain text. The widget only draws what it
is given (core's ``TokenEvent``, ``Agreement``, ``DistributionStats``).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import QTextBrowser, QTextEdit, QToolTip, QWidget

from qdesk.gui.widgets.margin_scale import FLIP_COLOR, HIGHLIGHT_COLOR, margin_color

_KEY = QTextFormat.Property.UserProperty + 1  # "turn:index" of the token under a fragment
_TOOLTIP = QEvent.Type.ToolTip  # looked up once: the filter sees every viewport event


class _TooltipFilter(QObject):
    """The viewport's tooltips, from an event filter rather than an override of
    ``viewportEvent``: an override is a Python call around the viewport's whole
    paint, which then runs holding the GIL that the chat's worker needs (the
    text views repaint several times a second while replies stream). The filter
    returns before the paint."""

    def __init__(self, view: TokenView) -> None:
        super().__init__(view)
        self._view = view

    def eventFilter(self, watched, event) -> bool:
        if event.type() == _TOOLTIP:
            self._view._show_tooltip(event)
            return True
        return False


@dataclass
class _Token:
    event: object  # TokenEvent
    agreement: object | None  # Agreement
    ref_top: object | None  # DistributionStats
    start: int = 0
    end: int = 0


class TokenView(QTextBrowser):
    token_clicked = Signal(int, int)  # turn, token index

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.piece: Callable[[int], str] = lambda i: f"#{i}"  # token id -> readable text
        self.plain = False
        self._blocks: list[tuple] = []  # ("user", text) | ("reply", turn) | ("note", text)
        self._tokens: dict[tuple[int, int], _Token] = {}
        self._order: dict[int, list[int]] = {}  # turn -> token indices in order
        # Per streamed token the GUI thread takes the GIL from the model's worker,
        # so appending is kept lean: one cursor reused, one format per tint.
        self._end: QTextCursor | None = None
        self._formats: dict[tuple[str, bool], QTextCharFormat] = {}
        self.viewport().setMouseTracking(True)
        self._tooltips = _TooltipFilter(self)
        self.viewport().installEventFilter(self._tooltips)

    # -- content --
    def clear_all(self) -> None:
        self._blocks.clear()
        self._tokens.clear()
        self._order.clear()
        self.clear()

    def add_user(self, text: str) -> None:
        self._blocks.append(("user", text))
        self._render_block(self._blocks[-1])

    def begin_reply(self, turn: int) -> None:
        self._blocks.append(("reply", turn))
        self._order[turn] = []
        self._render_block(self._blocks[-1])

    def add_token(self, turn: int, event, agreement=None, ref_top=None) -> None:
        tok = _Token(event, agreement, ref_top)
        self._tokens[(turn, event.index)] = tok
        self._order.setdefault(turn, []).append(event.index)
        self._insert_token(turn, tok)

    def add_note(self, text: str) -> None:
        self._blocks.append(("note", text))
        self._render_block(self._blocks[-1])

    def replace_reply(self, turn: int, branch) -> None:
        """Show ``branch`` (a transcript Branch) as turn ``turn``'s reply."""
        for k in [k for k in self._tokens if k[0] == turn]:
            del self._tokens[k]
        self._order[turn] = []
        for ev, a, top in zip(branch.tokens, branch.agreements, branch.ref_top):
            self._tokens[(turn, ev.index)] = _Token(ev, a, top)
            self._order[turn].append(ev.index)
        self.rerender()

    def set_plain(self, plain: bool) -> None:
        self.plain = plain
        self.rerender()

    def rerender(self) -> None:
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        pos = bar.value()
        self.clear()
        for block in self._blocks:
            self._render_block(block)
        bar.setValue(bar.maximum() if at_end else pos)

    # -- drawing --
    def _cursor_at_end(self) -> QTextCursor:
        if self._end is None:
            self._end = QTextCursor(self.document())
        self._end.setPosition(self.document().characterCount() - 1)
        return self._end

    def _format(self, color: str, flip: bool) -> QTextCharFormat:
        fmt = self._formats.get((color, flip))
        if fmt is None:
            fmt = QTextCharFormat()
            fmt.setBackground(QColor(color))
            if flip:
                fmt.setForeground(QColor(FLIP_COLOR))
                fmt.setFontWeight(QFont.Weight.Bold)
                fmt.setFontUnderline(True)
                fmt.setUnderlineColor(QColor(FLIP_COLOR))
            self._formats[(color, flip)] = fmt
        return fmt

    def _render_block(self, block) -> None:
        cursor = self._cursor_at_end()
        if not self.document().isEmpty():
            cursor.insertBlock()
        if block[0] == "user":
            fmt = QTextCharFormat()
            fmt.setFontWeight(QFont.Weight.Bold)
            fmt.setForeground(QColor("#37474f"))
            cursor.insertText("▶ " + block[1], fmt)
            cursor.insertBlock()
        elif block[0] == "note":
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(FLIP_COLOR))
            fmt.setFontItalic(True)
            cursor.insertText(block[1], fmt)
        else:
            turn = block[1]
            for index in self._order.get(turn, []):
                self._insert_token(turn, self._tokens[(turn, index)])

    def _insert_token(self, turn: int, tok: _Token) -> None:
        cursor = self._cursor_at_end()
        text = tok.event.text
        tok.start = cursor.position()
        if text:
            if self.plain:
                fmt = QTextCharFormat()
            else:
                flip = tok.agreement is not None and tok.agreement.flip
                fmt = QTextCharFormat(self._format(margin_color(tok.event.margin), flip))
                fmt.setProperty(_KEY, f"{turn}:{tok.event.index}")
            cursor.insertText(text, fmt)
        tok.end = cursor.position()

    # -- lookups --
    def token_at(self, pos: QPoint) -> tuple[int, int] | None:
        """(turn, index) of the token under viewport position ``pos``."""
        cursor = self.cursorForPosition(pos)
        doc_pos = cursor.position()
        for p in (doc_pos, doc_pos + 1):
            c = QTextCursor(self.document())
            c.setPosition(max(0, min(p, self.document().characterCount() - 1)))
            value = c.charFormat().property(_KEY)
            if value:
                turn, index = (int(x) for x in str(value).split(":"))
                tok = self._tokens.get((turn, index))
                if tok is not None and tok.start <= doc_pos <= tok.end:
                    return turn, index
        return None

    def flips(self, turn: int) -> list[bool]:
        return [bool(self._tokens[(turn, i)].agreement and self._tokens[(turn, i)].agreement.flip)
                for i in self._order.get(turn, [])]

    def token_count(self, turn: int) -> int:
        return len(self._order.get(turn, []))

    def token_data(self, turn: int, index: int):
        tok = self._tokens.get((turn, index))
        return None if tok is None else (tok.event, tok.agreement, tok.ref_top)

    def tooltip_html(self, turn: int, index: int) -> str:
        tok = self._tokens.get((turn, index))
        if tok is None:
            return ""
        ev, a, ref = tok.event, tok.agreement, tok.ref_top
        tr = self.tr
        rows = [f"<b>{html.escape(repr(ev.text))}</b> · " + tr("token {i}").format(i=index)]
        rows.append(tr("margin {m:.3f} · entropy {h:.2f} nats · p {p:.3f}").format(
            m=ev.margin, h=ev.entropy, p=ev.p_token))
        rows.append(self._top_table(tr("this model"), ev.top_ids, ev.top_probs, ev.token_id))
        if ref is not None:
            rows.append(self._top_table(tr("reference, same prefix"), ref.top_ids, ref.top_probs,
                                        ev.token_id))
        if a is not None:
            flip = tr("<b style='color:{c}'>flip</b> · ").format(c=FLIP_COLOR) if a.flip else ""
            rows.append(flip + tr("KLD {k:.4f} · Δp {dp:+.3f} · reference margin {m:.3f}").format(
                k=a.kld, dp=a.dp, m=a.ref_margin))
        return "<br>".join(rows)

    def _top_table(self, title: str, ids, probs, chosen: int) -> str:
        cells = []
        for i, p in zip(ids[:10], probs[:10]):
            piece = html.escape(repr(self.piece(int(i))))
            mark = "<b>" if i == chosen else ""
            end = "</b>" if i == chosen else ""
            cells.append(f"<tr><td>{mark}{piece}{end}</td><td align='right'>{p:.3f}</td></tr>")
        return f"<i>{html.escape(title)}</i><table cellspacing='0'>{''.join(cells)}</table>"

    # -- highlight and events --
    def highlight(self, turn: int, index: int) -> bool:
        tok = self._tokens.get((turn, index))
        if tok is None:
            return False
        sel = QTextEdit.ExtraSelection()
        cursor = QTextCursor(self.document())
        cursor.setPosition(tok.start)
        cursor.setPosition(max(tok.end, tok.start), QTextCursor.MoveMode.KeepAnchor)
        sel.cursor = cursor
        sel.format.setBackground(QColor(HIGHLIGHT_COLOR))
        self.setExtraSelections([sel])
        visible = QTextCursor(self.document())
        visible.setPosition(tok.start)
        self.setTextCursor(visible)
        self.ensureCursorVisible()
        return True

    def _show_tooltip(self, event) -> None:
        hit = self.token_at(event.pos())
        if hit is not None:
            QToolTip.showText(event.globalPos(), self.tooltip_html(*hit), self.viewport())
        else:
            QToolTip.hideText()

    def mouseReleaseEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton and not self.textCursor().hasSelection():
            hit = self.token_at(event.position().toPoint())
            if hit is not None:
                self.token_clicked.emit(*hit)
        super().mouseReleaseEvent(event)
