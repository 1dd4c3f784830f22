"""What a generation returns, and the error the runtime raises for what it cannot run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .generate import Stats


class EngineError(ValueError):
    """The folder, backend or device cannot be run as asked."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to pages), else its type."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


@dataclass
class Result:
    text: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    stats: Stats = field(default_factory=Stats)
    stopped_by: str = "length"  # "eos", "stop", "length", "context" (the cache is full) or "cancelled"

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "prompt_token_ids": self.prompt_token_ids,
            "token_ids": self.token_ids,
            "stopped_by": self.stopped_by,
            "stats": self.stats.to_dict(),
        }
