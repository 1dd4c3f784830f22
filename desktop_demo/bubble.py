"""A chat message: selectable text whose box follows its content (no scroll bar of its own).

A streaming reply appends plain text, which costs the piece's length rather than the reply's (a
QLabel re-lays its whole text on every change: 40 ms for 4 KB of Markdown here); it is rendered
as Markdown once, when it ends.
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor, QTextDocument
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser

MARGIN = 10  # inside the bubble, around its text


class Bubble(QTextBrowser):
    def __init__(self, role: str, text: str = "", max_width: int = 640):
        super().__init__()
        self.setProperty("role", role)
        self.setOpenLinks(False)  # a link in a reply is text, never a navigation
        self.setFrameShape(QFrame.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Fixed)
        self.document().setDocumentMargin(MARGIN)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self.max_width, self.full_width, self.markdown = max_width, False, False
        self.setPlainText(text)
        self._fit_width()

    def stream(self, text: str) -> None:
        """Append streamed text at the end."""
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.End)
        cursor.insertText(text)
        self._fit_width()

    def finish(self, markdown: str) -> None:
        """The whole reply, rendered as Markdown."""
        self.markdown = True
        self.setMarkdown(markdown)
        self.full_width = False
        self._fit_width()

    def set_max_width(self, width: int) -> None:
        self.max_width, self.full_width = width, False
        self._fit_width()

    def _fit_width(self) -> None:
        if self.full_width:  # already as wide as it may be: a longer text only adds lines
            return
        probe = QTextDocument()
        probe.setDefaultFont(self.font())
        probe.setDocumentMargin(MARGIN)
        probe.setMarkdown(self.toMarkdown()) if self.markdown else probe.setPlainText(self.toPlainText())
        width = math.ceil(probe.idealWidth()) + 2 * MARGIN + 4
        self.full_width = width >= self.max_width
        self.setFixedWidth(min(width, self.max_width))

    def _fit_height(self, size) -> None:
        self.setFixedHeight(math.ceil(size.height()) + 2 * self.frameWidth())
