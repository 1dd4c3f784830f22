"""The desktop app (desktop_demo/) in a real window on a virtual X screen (Xvfb): typed prompts,
streamed replies, Stop, turns from the KV cache, new chat, errors in the window, and a window
that keeps answering while the model generates. Screenshots go to desktop_demo/test-artifacts/."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cache_env import cache_at

ARTIFACTS = Path(__file__).resolve().parents[1] / "desktop_demo" / "test-artifacts"
# The window must answer between tokens. Generating on its thread would block it for a whole reply
# (seconds); the 100 ms goal is measured in benchmarks/desktop_app.py, not asserted on a noisy machine.
WORST_GAP_S = 0.25


@pytest.fixture(scope="module")
def screen():
    """A virtual X screen for this module's windows (Qt's xcb platform, as on a desktop)."""
    from qwen_edge.desktop_demo import virtual_screen

    proc, display = virtual_screen.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISPLAY", display)
        mp.setenv("QT_QPA_PLATFORM", "xcb")
        yield display
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def qapp(screen):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["qwen-edge-test"])
    assert app.platformName() == "xcb"
    return app


@pytest.fixture
def open_window(qapp, tmp_path):
    """open_window(folder, device=None): a shown ChatWindow with its own settings file; closed after."""
    from PySide6.QtCore import QSettings

    from qwen_edge.desktop_demo.window import ChatWindow

    windows = []

    def make(folder, device=None):
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
        window = ChatWindow(str(folder) if folder else None, device, settings=settings)
        window.show()
        windows.append(window)
        return window

    with cache_at(str(tmp_path / "cache")):
        yield make
    for window in windows:
        window.close()


def wait_for(qapp, condition, timeout=120.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the window"
        qapp.processEvents()
        time.sleep(0.002)


class GapMeter:
    """A 10 ms timer on the window's thread: the worst gap between its ticks while running."""

    def __init__(self):
        from PySide6.QtCore import QTimer

        self.timer, self.gaps, self.last = QTimer(), [], None
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(now - self.last)
        self.last = now

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()


def type_and_send(qapp, window, text):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    QTest.keyClicks(window.prompt, text)
    QTest.keyClick(window.prompt, Qt.Key_Return)
    qapp.processEvents()


def bubbles(window, role):
    from PySide6.QtWidgets import QApplication, QWidget

    for _ in range(3):  # a widget added to a shown layout is shown, and a removed one deleted, by the event loop
        QApplication.processEvents()
    found = [w for w in window.findChildren(QWidget) if w.property("role") == role and w.isVisible()]
    return [w.toPlainText() if hasattr(w, "toPlainText") else w.text() for w in found]


def cached(stats_line: str) -> tuple[int, int]:
    """(reused, prompt) from a reply's stats line: '… · 379 of 395 prompt tokens from the cache'."""
    found = re.search(r"(\d+) of (\d+) prompt tokens from the cache", stats_line)
    assert found, stats_line
    return int(found[1]), int(found[2])


def screenshot(qapp, window, name):
    ARTIFACTS.mkdir(exist_ok=True)
    for _ in range(10):
        qapp.processEvents()
    path = ARTIFACTS / name
    assert window.screen().grabWindow(window.winId()).save(str(path))
    return path


def test_pyside_signals_keep_their_references():
    """PySide6 6.12.0 drops a reference to True on every Signal.emit: Python 3.11 aborts once it
    reaches zero (seen after a few thousand streamed pieces). The pinned version must not."""
    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        text = Signal(str)
        stats = Signal(dict)

    got, emitter = [], Emitter()
    emitter.text.connect(got.append)
    emitter.stats.connect(got.append)
    before = sys.getrefcount(True)
    for _ in range(500):
        emitter.text.emit("piece")
        emitter.stats.emit({"ttft_s": 0.1})
    # the bug drops one per emit (500 here); other threads of a full test run move the count by tens
    assert len(got) == 1000 and sys.getrefcount(True) >= before - 100


def test_folder_summary_and_devices(export_kinds):
    from qwen_edge.desktop_demo.folder_info import describe, devices
    from qwen_edge.runtime import EngineError
    from qwen_edge.runtime.manifest import read

    _, tmp = export_kinds
    info = describe(tmp / "ort")
    assert (info.format, info.graph) == ("onnx", "ort")
    assert info.size_bytes == sum(e["bytes"] for e in read(tmp / "ort").files.values()) > 0
    assert info.summary.startswith("ONNX Runtime · ort · ")
    assert describe(tmp / "openvino").summary.startswith("OpenVINO · stateful · ")
    assert "CPU" in devices("onnx") and "CPU" in devices("openvino")
    with pytest.raises(EngineError, match="is not a folder"):
        describe(tmp / "missing")
    with pytest.raises(EngineError, match="not a qwen-edge export folder"):
        describe(tmp)


def test_chat_in_a_real_window_streams_stops_and_reuses_the_cache(qapp, open_window, export_kinds):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    _, tmp = export_kinds
    window = open_window(tmp / "ort", "CPU")
    wait_for(qapp, lambda: window.ready)
    assert window.model_details.text().startswith("ONNX Runtime · ort · FP")
    assert window.device.currentText() == "CPU" and "CPU" in window.statusBar().currentMessage()
    window.temperature.setValue(0.0)  # greedy: the same reply every run
    window.max_tokens.setValue(12)

    type_and_send(qapp, window, "hello there")
    assert window.generating and bubbles(window, "user") == ["hello there"]
    wait_for(qapp, lambda: not window.generating)
    reply = window.worker.chat.last
    assert reply.stats.new_tokens == 12 or reply.stopped_by == "eos"
    assert bubbles(window, "assistant") and window.reply_text == reply.text
    assert cached(bubbles(window, "stats")[-1])[0] == 0  # the first turn had nothing to reuse

    # Stop: a long reply streams (2500 tokens/s here) for 0.3 s, the window ticking throughout,
    # then the button stops it.
    window.max_tokens.setValue(3500)
    with GapMeter() as meter:
        type_and_send(qapp, window, "tell me more")
        wait_for(qapp, lambda: window.reply_text or not window.generating)
        streaming = time.monotonic()
        wait_for(qapp, lambda: time.monotonic() - streaming > 0.3 or not window.generating)
        QTest.mouseClick(window.send_button, Qt.LeftButton)  # the Send button reads Stop while generating
        wait_for(qapp, lambda: not window.generating)
    assert len(meter.gaps) > 15 and max(meter.gaps) < WORST_GAP_S, max(meter.gaps)
    stopped = window.worker.chat.last
    assert stopped.stopped_by == "cancelled" and stopped.stats.new_tokens < 3500
    assert bubbles(window, "stats")[-1].endswith("stopped")
    # Turn 2 came from the cache: only the new turn was computed.
    reused, prompt = cached(bubbles(window, "stats")[-1])
    assert 0 < reused < prompt
    assert len(window.worker.chat.messages) == 4  # the stopped reply stays in the conversation

    # Asking for more than the context holds: one sentence in the window, the chat goes on.
    window.max_tokens.setValue(4096)
    type_and_send(qapp, window, "again")
    wait_for(qapp, lambda: not window.generating)
    assert window.error.isVisible() and "ask for fewer new tokens" in window.error.text()
    assert "\n" not in window.error.text() and "Traceback" not in window.error.text()
    # The refused turn left the transcript and went back to the input box, to edit and resend.
    assert bubbles(window, "user") == ["hello there", "tell me more"] and window.prompt.toPlainText() == "again"
    screenshot(qapp, window, "tiny-chat.png")

    QTest.mouseClick(window.new_button, Qt.LeftButton)
    wait_for(qapp, lambda: window.worker.chat.messages == [])
    assert bubbles(window, "user") == [] and not window.error.isVisible()
    window.max_tokens.setValue(4)
    window.prompt.clear()
    type_and_send(qapp, window, "hello there")
    wait_for(qapp, lambda: not window.generating)
    assert bubbles(window, "user") == ["hello there"] and window.reply_text


def test_errors_show_in_the_window_in_one_sentence(qapp, open_window, export_kinds, tmp_path):
    _, tmp = export_kinds
    broken = tmp_path / "broken"
    shutil.copytree(tmp / "ort", broken)
    onnx = next(p for p in broken.iterdir() if p.suffix == ".onnx")
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    cases = [
        (broken, None, "altered since export"),
        (tmp / "ort", "NPU", "not present on this machine"),
        (tmp, None, "not a qwen-edge export folder"),
    ]
    for folder, device, message in cases:
        window = open_window(folder, device)
        wait_for(qapp, lambda w=window: w.error.isVisible())
        text = window.error.text()
        assert message in text and "\n" not in text and "Traceback" not in text, text
        assert not window.ready and not window.send_button.isEnabled()


def test_the_app_starts_from_its_commands(screen, export_kinds, tmp_path):
    """`qwen-edge desktop FOLDER` and `python -m qwen_edge.desktop_demo FOLDER` open a window that
    loads the model: each logs ready (it takes a message), then warm (its warm-up token), and is closed."""
    _, tmp = export_kinds
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "QWEN_EDGE_CACHE": str(tmp_path / "cache")}
    for command in (["qwen_edge.cli.main", "desktop"], ["qwen_edge.desktop_demo"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", *command, str(tmp / "ort")], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if "warm:" in line:
                    break
            assert any("ready:" in ln and "ONNX Runtime CPU" in ln for ln in lines), "".join(lines)[-2000:]
            assert "first inference done" in lines[-1]
        finally:
            proc.terminate()
            proc.wait(20)


@pytest.mark.slow
def test_real_model_window_streams_and_stops(qapp, open_window, real_gguf):
    """The real Qwen2.5-Coder-0.5B INT4 ONNX folder (the demo's, from the user cache): a code
    answer streams, Stop ends it mid-reply, the next turn reuses the cache; screenshot for review."""
    from qwen_edge.cli.demo import _exports

    folder = _exports(str(real_gguf), {})["onnx"]
    window = open_window(folder, "CPU")
    wait_for(qapp, lambda: window.ready, timeout=300)
    assert window.model_name.text() == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    window.temperature.setValue(0.0)
    window.max_tokens.setValue(96)
    with GapMeter() as meter:
        type_and_send(qapp, window, "Write a Python function that checks whether a number is prime.")
        wait_for(qapp, lambda: not window.generating)
    assert "def " in window.reply_text
    assert max(meter.gaps) < WORST_GAP_S, max(meter.gaps)

    window.max_tokens.setValue(512)
    type_and_send(qapp, window, "Now add a docstring.")
    wait_for(qapp, lambda: len(window.reply_text) > 40)
    window.send_or_stop()
    wait_for(qapp, lambda: not window.generating)
    last = window.worker.chat.last
    assert last.stopped_by == "cancelled" and last.stats.new_tokens < 512
    assert bubbles(window, "stats")[-1].endswith("stopped")
    assert screenshot(qapp, window, "real-chat.png").stat().st_size > 10_000


def test_the_last_folder_and_device_are_remembered(qapp, open_window, export_kinds):
    """Launched with no folder, the app opens the one used last, on the device used last."""
    _, tmp = export_kinds
    first = open_window(tmp / "openvino", "CPU")
    wait_for(qapp, lambda: first.ready)
    assert first.model_details.text().startswith("OpenVINO · stateful · ")
    first.close()
    again = open_window(None)  # the same settings file
    wait_for(qapp, lambda: again.ready)
    assert again.info.folder == (tmp / "openvino") and again.device.currentText() == "CPU"


def test_new_chat_during_a_reply_leaves_nothing_of_it(qapp, open_window, export_kinds):
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    _, tmp = export_kinds
    window = open_window(tmp / "ort", "CPU")
    wait_for(qapp, lambda: window.ready)
    window.temperature.setValue(0.0)
    window.max_tokens.setValue(3500)
    type_and_send(qapp, window, "tell me a long story")
    wait_for(qapp, lambda: window.reply_text or not window.generating)
    assert window.generating
    QTest.mouseClick(window.new_button, Qt.LeftButton)
    wait_for(qapp, lambda: not window.generating)  # the stopped reply's end arrives after the clear
    assert bubbles(window, "user") == bubbles(window, "assistant") == bubbles(window, "stats") == []
    assert window.empty.isVisible()
    wait_for(qapp, lambda: window.worker.chat.messages == [])  # the reset queued behind the reply
    window.max_tokens.setValue(4)
    type_and_send(qapp, window, "hi")
    wait_for(qapp, lambda: not window.generating)
    assert bubbles(window, "user") == ["hi"] and len(bubbles(window, "stats")) == 1
