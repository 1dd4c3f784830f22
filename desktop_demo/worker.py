"""The model's side of the app: loads an engine and streams chat replies on its own thread, and
reports back through Qt signals (queued into the window's thread)."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal, Slot

from qwen_edge.runtime import Engine, EngineError
from qwen_edge.runtime.engine import common_prefix
from qwen_edge.runtime.generate import SamplingError
from qwen_edge.runtime.result import first_line

from .folder_info import BACKEND_LABEL

log = logging.getLogger(__name__)


class ChatWorker(QObject):
    loaded = Signal(str, float)  # backend and device, load seconds
    piece = Signal(str)  # reply text as it streams
    finished = Signal(dict)  # the reply's stats
    failed = Signal(str)  # one sentence for the window

    def __init__(self):
        super().__init__()
        self.chat = None

    @Slot(str, str)
    def load(self, folder: str, device: str) -> None:
        self.chat = None
        try:
            engine = Engine.load(folder, device=device, warm_up=True)
            if engine.tokenizer is None or not engine.tokenizer.chat_template:
                raise EngineError(f"{folder} has no chat template: export an Instruct model with its tokenizer")
        except EngineError as e:
            self.failed.emit(str(e))
            return
        except Exception as e:  # a library's own failure: logged in full, one sentence in the window
            log.exception("loading %s failed", folder)
            self.failed.emit(f"cannot load {folder}: {first_line(e)}")
            return
        self.chat = engine.chat(overflow="error")
        self.loaded.emit(f"{BACKEND_LABEL[engine.manifest.format]} {device}", engine.load_s)

    @Slot(str, dict)
    def send(self, text: str, sampling: dict) -> None:
        if self.chat is None:
            self.failed.emit("no model is loaded: open an export folder first")
            return
        cached = list(self.chat.session.tokens)
        try:
            for piece in self.chat.send(text, **sampling):
                self.piece.emit(piece)
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
            "reused_tokens": min(common_prefix(cached, result.prompt_token_ids), prompt - 1),
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
