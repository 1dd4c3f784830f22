"""A backend-agnostic generation loop: any object with prefill(ids) -> logits and
decode(id) -> logits (1-D numpy arrays over the vocabulary) can generate."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Step(Protocol):
    def prefill(self, ids: Sequence[int]) -> np.ndarray: ...
    def decode(self, token: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False


@dataclass
class Stats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float = 0.0  # prompt in, first token out
    total_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.ttft_s
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0


def sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    if s.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / s.temperature
    if 0 < s.top_k < z.size:
        z[z < np.partition(z, -s.top_k)[-s.top_k]] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    if s.top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < s.top_p  # smallest set whose mass reaches top_p
        p[order[~keep]] = 0.0
        p /= p.sum()
    return int(rng.choice(p.size, p=p))


def generate(step: Step, prompt: Sequence[int], s: Sampling, eos_ids=(), stats: Stats | None = None) -> Iterator[int]:
    """Yield new token ids; `stats` (if given) is filled in as it goes."""
    stats = stats if stats is not None else Stats()
    stats.prompt_tokens, rng, start = len(prompt), np.random.default_rng(s.seed), time.perf_counter()
    logits = step.prefill(prompt)
    for i in range(s.max_new_tokens):
        token = sample(logits, s, rng)
        stats.total_s = time.perf_counter() - start
        if i == 0:
            stats.ttft_s = stats.total_s
        if token in eos_ids and not s.ignore_eos:
            return
        stats.new_tokens = i + 1
        yield token
        if i + 1 < s.max_new_tokens:
            logits = step.decode(token)
