"""A multi-turn conversation over one session: the model's chat template renders the whole
conversation each turn, and the session computes only what its cache does not hold yet (the new
user turn, plus any tokens where re-tokenizing the last reply differs from what was generated).
The result equals running the whole conversation from scratch; only the cost differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .result import EngineError, Result

if TYPE_CHECKING:  # the engine makes chats: importing it here would be a cycle
    from .engine import Session

OVERFLOW = ("error", "trim")


class Chat:
    def __init__(self, session: Session, system: str | None = None, overflow: str = "error"):
        if overflow not in OVERFLOW:
            raise EngineError(f"overflow must be one of {', '.join(OVERFLOW)}, not {overflow!r}")
        self.session, self.overflow = session, overflow
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.last: Result | None = None

    def send(self, text: str, stop: Sequence[str] = (), **options) -> Iterator[str]:
        """Stream the reply to `text`; the reply joins the conversation when the stream ends."""
        tokenizer = self.session.engine.tokenizer
        messages = [*self.messages, {"role": "user", "content": text}]
        ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
        capacity, wanted = self.session.engine.capacity, options.get("max_new_tokens", 64)
        while capacity and len(ids) + wanted > capacity:
            turns = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
            if not turns:  # nothing left to drop: the message itself is too long
                raise EngineError(
                    f"this message needs {len(ids)} + {wanted} tokens; this model holds {capacity}: "
                    "shorten it or ask for fewer new tokens"
                )
            if self.overflow == "error":
                raise EngineError(
                    f"the conversation needs {len(ids)} + {wanted} tokens; this model holds {capacity}: "
                    "start a new chat, ask for fewer tokens, or use overflow='trim'"
                )
            del messages[turns[0] : turns[0] + 2]  # the oldest user turn and its reply
            ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
        result = Result("", ids, [])
        yield from self.session.stream(ids, stop=stop, result=result, **options)
        self.messages = [*messages, {"role": "assistant", "content": result.text}]
        self.last = result

    def ask(self, text: str, stop: Sequence[str] = (), **options) -> Result:
        for _ in self.send(text, stop=stop, **options):
            pass
        return self.last

    def reset(self) -> None:
        """Forget the turns (the system message stays)."""
        self.messages = [m for m in self.messages if m["role"] == "system"]
