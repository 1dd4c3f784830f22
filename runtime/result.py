"""What a generation returns, and the error the runtime raises for what it cannot run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .generate import Stats


class EngineError(ValueError):
    """The folder, backend or device cannot be run as asked."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to pages), else its type.
    OpenVINO's start with where they were raised ("Exception from src/inference/src/cpp/core.cpp:84:",
    "Check 'x' failed at src/…:"), one line per frame: those are skipped for the first line that says
    what went wrong."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if not (_WHERE.match(ln) and ln.endswith(":"))]
    if said and said[0].endswith(":"):  # "FrontEnd API failed with GeneralFailure:" introduces the cause
        said = [ln for ln in said if not ln.endswith(":")] or said
    return (said or lines or [type(e).__name__])[0]


_WHERE = re.compile(r"(Exception from src/|Check '.*' failed at src/)")


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
