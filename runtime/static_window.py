"""How tokens go through a static graph: a fixed window of `window` tokens per prefill call, a
one-token decode graph, and `capacity` KV slots in all.

A prompt is cut into windows; the last one is padded at the end (pad slots are masked and later
overwritten). Where padding would run past the last slot, the window moves back over slots
already written, recomputing them from the same tokens (their keys and values come out the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


class StaticWindowCache:
    """The KV cache of a static pair, for either backend: fixed [1, kv, capacity, d] buffers that
    swap roles each call (one is read as past while the other is written as present).

    `runner()` makes a fresh `run(decode, feed, past, present) -> logits [size, vocab]` (with its
    own requests / bindings), `copy(buffers)` an independent copy of one set of buffers: the rest —
    chunking, padding, masks, positions, roll-back — lives here once."""

    def __init__(self, window: int, capacity: int, buffers: list[dict], runner, copy):
        self.window, self.capacity, self.buffers = window, capacity, buffers
        self.runner, self.copy, self.run = runner, copy, runner()
        self.length, self.current, self.tokens = 0, 0, []

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:  # always the last: no all_logits
        chunks = plan(self.length, len(ids), self.window, self.capacity)
        self.tokens = self.tokens[: self.length] + list(ids)
        for chunk in chunks:
            tokens = self.tokens[chunk.start : chunk.end] + [0] * (chunk.size - chunk.real)
            slots = np.arange(chunk.start, chunk.start + chunk.size, dtype=np.int64)
            feed = {
                "input_ids": np.array([tokens], np.int64),
                "attention_mask": (np.arange(self.capacity) < chunk.end).astype(np.int64)[None],
                "position_ids": slots[None],
                "cache_position": slots,
            }
            past, present = self.buffers[self.current], self.buffers[1 - self.current]
            logits = self.run(chunk.size == 1, feed, past, present)[chunk.real - 1]
            self.current = 1 - self.current
        self.length += len(ids)
        return np.array(logits, np.float32)

    def trim(self, n: int) -> None:
        self.length = min(self.length, n)  # slots past `length` are masked, then overwritten

    def fork(self) -> StaticWindowCache:
        held = self.copy(self.buffers[self.current])
        other = StaticWindowCache(self.window, self.capacity, [held, self.copy(held)], self.runner, self.copy)
        other.length, other.tokens = self.length, list(self.tokens)
        return other
