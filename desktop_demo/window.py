"""The chat window: model bar, transcript, settings and prompt. Everything slow happens on the
worker's thread; this thread only draws, so the window answers while a reply streams."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QSettings, Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qwen_edge.runtime import EngineError

from .bubble import Bubble
from .folder_info import BACKEND_LABEL, FolderInfo, describe, devices
from .worker import ChatWorker

log = logging.getLogger(__name__)
RENDER_MS = 33  # a streamed reply is redrawn at most ~30 times a second

STYLE = """
QMainWindow, #central { background: #f5f6f8; }
#header { background: #ffffff; border-bottom: 1px solid #dde1e6; }
#modelName { font-size: 15px; font-weight: 600; color: #1f2328; }
#modelDetails { color: #57606a; }
#transcript, #messages { background: #f5f6f8; border: none; }
QTextBrowser[role="user"] { background: #2f6fde; color: white; border-radius: 12px; }
QTextBrowser[role="assistant"] { background: #ffffff; color: #1f2328; border: 1px solid #dde1e6; border-radius: 12px; }
QLabel[role="stats"] { color: #6e7781; font-size: 11px; padding-left: 6px; }
#empty { color: #8c959f; font-size: 14px; }
#error { background: #ffebe9; color: #a40e26; border: 1px solid #ffcecb; border-radius: 6px; padding: 6px 10px; }
#composer { background: #ffffff; border-top: 1px solid #dde1e6; }
#prompt { border: 1px solid #d0d7de; border-radius: 8px; padding: 6px; background: #ffffff; }
QPushButton { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 14px; background: #f6f8fa; }
QPushButton:hover { background: #eef1f4; }
QPushButton#send { background: #2f6fde; color: white; border: none; font-weight: 600; min-width: 72px; }
QPushButton#send[stopping="true"] { background: #cf222e; }
QPushButton:disabled, QPushButton#send:disabled { background: #e6e9ed; color: #8c959f; }
QLabel[role="setting"] { color: #57606a; }
"""


class ChatWindow(QMainWindow):
    request_load = Signal(str, str)
    request_send = Signal(str, dict)
    request_new_chat = Signal()

    def __init__(self, folder: str | None = None, device: str | None = None, settings: QSettings | None = None):
        super().__init__()
        self.settings = settings or QSettings("qwen-edge", "desktop")
        self.info: FolderInfo | None = None
        self.generating = False
        self.ready = False
        self.reply: Bubble | None = None  # the assistant bubble being streamed into
        self.rendered_chars = 0  # how much of reply_text the bubble shows
        self.reply_text = ""
        self.asked = ""  # the user turn being answered
        self.where, self.load_s = "", 0.0  # where the model runs, and its load time
        self.render_timer = QTimer(self, singleShot=True)
        self.render_timer.timeout.connect(self._render)
        self.rendered_at = 0.0
        self.setWindowTitle("qwen-edge chat")
        self.resize(920, 700)
        self.setStyleSheet(STYLE)
        self._build()
        self.thread_ = QThread(self)
        self.worker = ChatWorker()
        self.worker.moveToThread(self.thread_)
        self.request_load.connect(self.worker.load)
        self.request_send.connect(self.worker.send)
        self.request_new_chat.connect(self.worker.new_chat)
        self.worker.loaded.connect(self._on_loaded)
        self.worker.warmed.connect(self._on_warmed)
        self.worker.streamed.connect(self._on_streamed)
        self.worker.finished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self.thread_.start()
        folder = folder or self.settings.value("folder")
        if folder:
            self.open_folder(str(folder), device or self.settings.value("device"))
        else:
            self._set_status("Open an export folder to start (qwen-edge export … -o FOLDER).")

    # ---- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        central = QWidget(objectName="central")
        self.setCentralWidget(central)
        page = QVBoxLayout(central)
        page.setContentsMargins(0, 0, 0, 0)
        page.setSpacing(0)

        header = QFrame(objectName="header")
        bar = QHBoxLayout(header)
        bar.setContentsMargins(16, 10, 16, 10)
        names = QVBoxLayout()
        names.setSpacing(2)
        self.model_name = QLabel("No model", objectName="modelName")
        self.model_details = QLabel("", objectName="modelDetails")
        names.addWidget(self.model_name)
        names.addWidget(self.model_details)
        bar.addLayout(names, 1)
        bar.addWidget(QLabel("Device", objectName="modelDetails"))
        self.device = QComboBox(objectName="device")
        self.device.setMinimumWidth(150)
        self.device.activated.connect(self._on_device_chosen)
        bar.addWidget(self.device)
        self.open_button = QPushButton("Open folder…", objectName="open")
        self.open_button.clicked.connect(self._choose_folder)
        bar.addWidget(self.open_button)
        self.new_button = QPushButton("New chat", objectName="newChat")
        self.new_button.clicked.connect(self.new_chat)
        bar.addWidget(self.new_button)
        page.addWidget(header)

        self.scroll = QScrollArea(objectName="transcript")
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        messages = QWidget(objectName="messages")
        self.messages = QVBoxLayout(messages)
        self.messages.setContentsMargins(18, 16, 18, 16)
        self.messages.setSpacing(8)
        self.empty = QLabel("Ask the model anything. Enter sends, Shift+Enter starts a new line.", objectName="empty")
        self.empty.setAlignment(Qt.AlignCenter)
        self.messages.addWidget(self.empty)
        self.messages.addStretch(1)
        self.scroll.setWidget(messages)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._follow)
        page.addWidget(self.scroll, 1)

        composer = QFrame(objectName="composer")
        box = QVBoxLayout(composer)
        box.setContentsMargins(16, 10, 16, 12)
        self.error = QLabel("", objectName="error")
        self.error.setWordWrap(True)
        self.error.hide()
        box.addWidget(self.error)
        knobs = QHBoxLayout()
        self.temperature = _spin(QDoubleSpinBox(objectName="temperature"), 0.0, 2.0, 0.7, 0.1)
        self.top_p = _spin(QDoubleSpinBox(objectName="topP"), 0.05, 1.0, 0.9, 0.05)
        self.max_tokens = _spin(QSpinBox(objectName="maxTokens"), 1, 4096, 512, 64)
        for label, widget in (("Temperature", self.temperature), ("Top-p", self.top_p),
                              ("Max new tokens", self.max_tokens)):  # fmt: skip
            knobs.addWidget(_setting_label(label))
            knobs.addWidget(widget)
            knobs.addSpacing(12)
        knobs.addStretch(1)
        box.addLayout(knobs)
        row = QHBoxLayout()
        self.prompt = QPlainTextEdit(objectName="prompt")
        self.prompt.setPlaceholderText("Message the model…")
        self.prompt.setFixedHeight(64)
        self.prompt.installEventFilter(self)
        row.addWidget(self.prompt, 1)
        self.send_button = QPushButton("Send", objectName="send")
        self.send_button.setFixedHeight(64)
        self.send_button.clicked.connect(self.send_or_stop)
        row.addWidget(self.send_button)
        box.addLayout(row)
        page.addWidget(composer)
        self._set_ready(False)

    # ---- actions --------------------------------------------------------------------------------
    def open_folder(self, folder: str, device: str | None = None) -> None:
        self._show_error("")
        try:
            info = describe(folder)
        except EngineError as e:
            self._show_error(str(e))
            self._set_status("No model loaded.")
            return
        self.info = info
        self.model_name.setText(info.name)
        self.model_details.setText(f"{info.summary} · {info.folder.name}")
        self.model_details.setToolTip(str(info.folder))  # a long path would widen the window past the screen
        here = devices(info.format)
        self.device.clear()
        self.device.addItems(here)
        device = device or (here[0] if here else "CPU")
        if device not in here:  # asked for (or remembered) a device this machine lacks: try it, say why not
            self.device.addItem(device)
        self.device.setCurrentText(device)
        self._load(device)

    def _load(self, device: str) -> None:
        self._stop_reply()
        self._clear_transcript()
        self._set_ready(False)
        self._set_status(f"Loading {self.info.name} on {BACKEND_LABEL[self.info.format]} {device}…")
        self.settings.setValue("folder", str(self.info.folder))
        self.settings.setValue("device", device)
        self.request_load.emit(str(self.info.folder), device)

    def send_or_stop(self) -> None:
        if self.generating:
            self.worker.stop()
            return
        text = self.prompt.toPlainText().strip()
        if not text or not self.ready:
            return
        self._show_error("")
        self.prompt.clear()
        self.empty.hide()
        self.asked = text
        self._add_bubble(text, "user")
        self.reply_text, self.rendered_chars = "", 0
        self.reply = self._add_bubble("", "assistant")
        self.generating = True
        self._sync_buttons()
        sampling = {"max_new_tokens": self.max_tokens.value(), "temperature": round(self.temperature.value(), 3),
                    "top_p": round(self.top_p.value(), 3)}  # fmt: skip
        self.request_send.emit(text, sampling)

    def new_chat(self) -> None:
        self._stop_reply()
        self.request_new_chat.emit()  # queued behind the stopped reply on the worker's thread
        self._clear_transcript()
        self._show_error("")

    # ---- worker signals ------------------------------------------------------------------------
    def _on_loaded(self, where: str, seconds: float) -> None:
        self.where, self.load_s = where, seconds
        self._set_ready(True)
        self._set_status(f"Ready · {where} · loaded in {seconds:.1f} s · warming up")
        log.info("ready: %s on %s, loaded in %.2f s", self.info.name, where, seconds)
        self.prompt.setFocus()

    def _on_warmed(self, seconds: float) -> None:
        self._set_status(f"Ready · {self.where} · loaded in {self.load_s:.1f} s + {seconds:.1f} s warm-up")
        log.info("warm: first inference done in %.2f s", seconds)

    def _on_streamed(self) -> None:
        self.reply_text += self.worker.take()
        if not self.render_timer.isActive():  # redraw at most every RENDER_MS, however fast tokens come
            self.render_timer.start(max(0, RENDER_MS - int((time.perf_counter() - self.rendered_at) * 1000)))

    def _render(self) -> None:
        self.render_timer.stop()
        self.rendered_at = time.perf_counter()
        if self.reply is not None and len(self.reply_text) > self.rendered_chars:
            self.reply.stream(self.reply_text[self.rendered_chars :])
            self.rendered_chars = len(self.reply_text)

    def _flush(self) -> None:
        self.reply_text += self.worker.take()
        self._render()

    def _on_finished(self, stats: dict) -> None:
        self._flush()
        if self.reply is None:  # the chat was cleared (new chat, another device) while this reply ran
            self._end_reply()
            return
        self.reply.finish(self.reply_text or "*(no text)*")
        line = (f"TTFT {stats['ttft_s']:.2f} s · {stats['tokens_per_s']:.1f} tok/s · {stats['new_tokens']} tokens"
                f" · {stats['reused_tokens']} of {stats['prompt_tokens']} prompt tokens from the cache")  # fmt: skip
        if stats["stopped_by"] == "cancelled":
            line += " · stopped"
        self._add_label(line, "stats")
        self._end_reply()

    def _on_failed(self, message: str) -> None:
        self._show_error(message)
        if self.generating:
            self._flush()
            if self.reply is None:  # cleared meanwhile: nothing of this turn is shown
                pass
            elif self.reply_text:  # failed mid-reply: keep what came
                self.reply.finish(self.reply_text)
            else:  # refused before a token (over the context): the turn never joined the chat
                self._drop_last_rows(2)
                self.prompt.setPlainText(self.asked)
            self._end_reply()
        elif not self.ready:
            self._set_status("No model loaded.")

    # ---- helpers --------------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        start = str(self.info.folder.parent) if self.info else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open an export folder", start)
        if folder:
            self.open_folder(folder)

    def _on_device_chosen(self, _index: int) -> None:
        if self.info is not None:
            self._load(self.device.currentText())

    def _stop_reply(self) -> None:
        if self.generating:
            self.worker.stop()

    def _end_reply(self) -> None:
        self.generating, self.reply = False, None
        self._sync_buttons()
        self.prompt.setFocus()

    def _add_bubble(self, text: str, role: str) -> Bubble:
        # A row with a stretch on the far side: the bubble keeps the width of its text.
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        bubble = Bubble(role, text, self._bubble_width())
        if role == "user":
            line.addStretch(1)
        line.addWidget(bubble)
        if role != "user":
            line.addStretch(1)
        self.messages.insertWidget(self.messages.count() - 1, row)
        return bubble

    def _bubble_width(self) -> int:
        return int(self.scroll.viewport().width() * 0.8)

    def _add_label(self, text: str, role: str) -> QLabel:
        label = QLabel(text)
        label.setProperty("role", role)
        label.setTextFormat(Qt.PlainText)
        self.messages.insertWidget(self.messages.count() - 1, label)
        return label

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        for bubble in self.findChildren(Bubble):
            bubble.set_max_width(self._bubble_width())

    def _clear_transcript(self) -> None:
        self._drop_last_rows(self.messages.count() - 2)  # the empty-chat hint and the stretch stay
        self.empty.show()
        self.reply, self.reply_text = None, ""

    def _drop_last_rows(self, n: int) -> None:
        for _ in range(n):
            row = self.messages.takeAt(self.messages.count() - 2).widget()  # the stretch is last
            row.hide()  # gone now; deleted when the event loop next runs
            row.deleteLater()
        if self.messages.count() == 2:
            self.empty.show()

    def _follow(self, _low: int, high: int) -> None:
        self.scroll.verticalScrollBar().setValue(high)  # keep the newest text in view as it streams

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))
        if message:
            log.warning("%s", message)

    def _set_status(self, message: str) -> None:
        self.statusBar().showMessage(message)

    def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        self.send_button.setText("Stop" if self.generating else "Send")
        self.send_button.setProperty("stopping", "true" if self.generating else "false")
        self.send_button.style().polish(self.send_button)
        self.send_button.setEnabled(self.ready)
        self.new_button.setEnabled(self.ready)  # the prompt box takes typing even while the model loads

    def eventFilter(self, watched, event) -> bool:
        enter = event.type() == QEvent.KeyPress and event.key() in (Qt.Key_Return, Qt.Key_Enter)
        if watched is self.prompt and enter and not event.modifiers() & Qt.ShiftModifier:
            if not self.generating:  # Enter never stops a reply: only the Stop button does
                self.send_or_stop()
            return True
        return super().eventFilter(watched, event)

    def closeEvent(self, event) -> None:
        self._stop_reply()
        self.thread_.quit()
        self.thread_.wait(10_000)
        super().closeEvent(event)


def _spin(box, low: float, high: float, value: float, step: float):
    box.setRange(low, high)
    box.setValue(value)
    box.setSingleStep(step)
    return box


def _setting_label(text: str) -> QLabel:
    label = QLabel(text)
    label.setProperty("role", "setting")
    return label
