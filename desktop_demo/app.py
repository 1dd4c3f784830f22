"""Start the app: `main(folder, device)` builds the QApplication and the window and runs until
the window closes."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from .window import ChatWindow


def main(folder: str | None = None, device: str | None = None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("qwen-edge chat")
    window = ChatWindow(folder, device)
    window.show()
    return app.exec()

