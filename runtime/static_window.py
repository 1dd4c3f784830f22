"""How tokens go through a static graph: a fixed window of `window` tokens per prefill call, a
one-token decode graph, and `capacity` KV slots in all.

A prompt is cut into windows; the last one is padded at the end (pad slots are masked and later
overwritten). Where padding would run past the last slot, the window moves back over slots
already written, recomputing them from the same tokens (their keys and values come out the same).
"""

from __future__ import annotations

from dataclasses import dataclass


class ContextFull(ValueError):
    """The tokens do not fit the KV capacity."""


@dataclass(frozen=True)
class Chunk:
    start: int  # first slot written
    size: int  # tokens fed (the graph's window, or 1 for decode)
    real: int  # tokens[start : start + real] are real; the rest is padding

    @property
    def end(self) -> int:
        return self.start + self.real


def plan(length: int, n: int, window: int, capacity: int) -> list[Chunk]:
    """The calls that write n new tokens after `length` cached ones."""
    if n <= 0:
        raise ValueError("nothing to feed: give at least one token")
    if length + n > capacity:
        raise ContextFull(
            f"{length + n} tokens do not fit this static model's {capacity} KV slots "
            f"({length} already cached, {n} new): shorten the prompt or re-export with a larger --max-context"
        )
    if n == 1:
        return [Chunk(length, 1, 1)]
    chunks, start, end = [], length, length + n
    while start < end:
        stop = min(start + window, end)
        first = start if start + window <= capacity else capacity - window
        chunks.append(Chunk(first, window, stop - first))
        start = stop
    return chunks
