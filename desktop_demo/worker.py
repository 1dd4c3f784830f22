"""The model's side of the app: loads an engine and streams chat replies on its own thread, and
reports back through Qt signals (queued into the window's thread)."""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, Signal, Slot

from qwen_edge.runtime import Engine, EngineError
from qwen_edge.runtime.generate import SamplingError, reusable_prefix
from qwen_edge.runtime.result import first_line

from .folder_info import BACKEND_LABEL

log = logging.getLogger(__name__)


class ChatWorker(QObject):
    loaded = Signal(str, float)  # backend and device, load seconds
    warmed = Signal(float)  # warm-up seconds
    streamed = Signal()  # new reply text waits in take()
    finished = Signal(dict)  # the reply's stats
    failed = Signal(str)  # one sentence for the window

    def __init__(self):
        super().__init__()
        self.chat = None
        # Pieces wait here, and at most one `streamed` signal is queued for them: a fast model
        # (a tiny one makes 1000 pieces a second) must not flood the window's event queue.
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def take(self) -> str:
        """The reply text streamed since the last call (the window's thread calls this)."""
        with self._lock:
            text = "".join(self._pending)
            self._pending.clear()
        return text

    def _push(self, piece: str) -> None:
        with self._lock:
            notify = not self._pending
            self._pending.append(piece)
        if notify:
            self.streamed.emit()

    @Slot(str, str)
    def load(self, folder: str, device: str) -> None:
        self.chat = None
        try:
            engine = Engine.load(folder, device=device)
            if engine.tokenizer is None or not engine.tokenizer.chat_template:
                raise EngineError(f"{folder} has no chat template: export an Instruct model with its tokenizer")
        except EngineError as e:
            self.failed.emit(str(e))
            return
        except Exception as e:  # a library's own failure: logged in full, one sentence in the window
            log.exception("loading %s failed", folder)
            self.failed.emit(f"cannot load {folder}: {first_line(e)}")
            return
        self.chat = engine.chat(overflow="trim")  # a long chat drops its oldest turns rather than stop
        self.loaded.emit(f"{BACKEND_LABEL[engine.manifest.format]} {device}", engine.load_s)
        # The runtime's one-time work on a first inference (OpenVINO repacks its weights: ~1 s for
        # the 0.5B) runs now, on this thread, while the window already takes the first message: a
        # message sent meanwhile waits for it here, so it still gets a warm model.
        try:
            self.warmed.emit(engine.warm_up())
        except Exception as e:
            log.exception("warm-up failed")
            self.failed.emit(f"the first inference failed: {first_line(e)}")

    @Slot(str, dict)
    def send(self, text: str, sampling: dict) -> None:
        if self.chat is None:
            self.failed.emit("no model is loaded: open an export folder first")
            return
        cached = list(self.chat.session.tokens)
        try:
            for piece in self.chat.send(text, **sampling):
                self._push(piece)
        except (EngineError, SamplingError) as e:
            self.failed.emit(str(e))
            return
        except Exception as e:
            log.exception("generation failed")
            self.failed.emit(f"generation failed: {first_line(e)}")
            return
        result = self.chat.last
        prompt = len(result.prompt_token_ids)
        self.finished.emit({
            "ttft_s": result.stats.ttft_s,
            "tokens_per_s": result.stats.decode_tokens_per_s,
            "new_tokens": result.stats.new_tokens,
            "prompt_tokens": prompt,
            "reused_tokens": reusable_prefix(cached, result.prompt_token_ids),
            "stopped_by": result.stopped_by,
        })  # fmt: skip

    def stop(self) -> None:
        """Called from the window's thread: the reply ends before its next token."""
        if self.chat is not None:
            self.chat.session.cancel()

    @Slot()
    def new_chat(self) -> None:
        if self.chat is not None:
            self.chat.reset()
