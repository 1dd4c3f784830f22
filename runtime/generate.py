"""A backend-agnostic generation loop: any object with prefill(ids) -> logits and
decode(id) -> logits (1-D numpy arrays over the vocabulary) can generate."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MIN_TEMPERATURE = 1e-4  # below it logits / T overflows float32: use 0 (greedy)


class SamplingError(ValueError):
    """A sampling setting out of its range."""


class Step(Protocol):
    def prefill(self, ids: Sequence[int]) -> np.ndarray: ...
    def decode(self, token: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked. Penalties first, then temperature, then the cuts, in the
    order transformers and vLLM apply them:

    repetition_penalty  tokens seen in the prompt or output: logit / p if positive, * p if not
    presence_penalty    tokens seen in the output: logit - p
    min_p               drop tokens whose probability is below min_p x the top token's
    """

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy (penalties still apply)
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        numbers = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty")
        for name in numbers:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise SamplingError(f"{name} must be a finite number, not {value!r}")
        for name in ("max_new_tokens", "top_k") + (("seed",) if self.seed is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SamplingError(f"{name} must be a whole number, not {value!r}")
        checks = (
            (self.max_new_tokens >= 0, "max_new_tokens must be >= 0"),
            (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= 100,
             f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE:g} and 100"),
            (self.top_k >= 0, "top_k must be >= 0 (0 is off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1 is off)"),
            (self.seed is None or 0 <= self.seed < 2**63, "seed must be a whole number from 0 to 2**63 - 1"),
        )  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise SamplingError(message)


@dataclass
class Stats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    load_s: float = 0.0
    ttft_s: float = 0.0  # prompt in, first token out
    total_s: float = 0.0
    drafted: int = 0  # speculative decoding: tokens guessed, and how many of them were kept
    accepted: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.ttft_s
        return (self.new_tokens - 1) / decode_s if self.new_tokens > 1 and decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "load_s": self.load_s,
            "ttft_s": self.ttft_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "total_s": self.total_s,
            **({"drafted": self.drafted, "accepted": self.accepted} if self.drafted else {}),
        }


def penalize(logits: np.ndarray, s: Sampling, seen: np.ndarray, output: np.ndarray) -> np.ndarray:
    """`logits` with the repetition penalty on `seen` ids and the presence penalty on `output` ids."""
    if s.repetition_penalty == 1.0 and s.presence_penalty == 0.0:
        return logits
    z = logits.astype(np.float32, copy=True)
    if s.repetition_penalty != 1.0 and seen.size:
        ids = np.unique(seen)
        z[ids] = np.where(z[ids] > 0, z[ids] / s.repetition_penalty, z[ids] * s.repetition_penalty)
    if s.presence_penalty and output.size:
        z[np.unique(output)] -= s.presence_penalty
    return z


def sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    if s.temperature <= 0:
        return int(np.argmax(logits))
    p = probabilities(logits, s)
    return int(rng.choice(p.size, p=p))


def probabilities(logits: np.ndarray, s: Sampling) -> np.ndarray:
    """The distribution `sample` draws from at temperature > 0: temperature, top-k, min-p, top-p."""
    z = logits.astype(np.float64) / s.temperature
    if 0 < s.top_k < z.size:
        z[z < np.partition(z, -s.top_k)[-s.top_k]] = -np.inf
    p = np.exp(z - z.max())
    total = p.sum()
    if not np.isfinite(total) or total <= 0:
        raise SamplingError("the model's logits are not finite numbers (NaN or inf): re-export the folder")
    p /= total
    if s.min_p > 0:
        p[p < s.min_p * p.max()] = 0.0
        p /= p.sum()
    if s.top_p < 1.0:
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < s.top_p  # smallest set whose mass reaches top_p
        p[order[~keep]] = 0.0
        p /= p.sum()
    return p


def generate(
    step: Step,
    prompt: Sequence[int],
    s: Sampling,
    eos_ids=(),
    stats: Stats | None = None,
    cancel: threading.Event | None = None,
    history: Sequence[int] = (),
) -> Iterator[int]:
    """Yield new token ids; `stats` (if given) is filled in as it goes. Setting `cancel` (from any
    thread) stops before the next step. `history`: tokens already in the cache before `prompt`
    (a chat's earlier turns), seen by the repetition penalty."""
    stats = stats if stats is not None else Stats()
    stats.prompt_tokens, rng, start = len(prompt), np.random.default_rng(s.seed), time.perf_counter()
    penalized = s.repetition_penalty != 1.0 or s.presence_penalty != 0.0
    seen = np.array([*history, *prompt], np.int64) if penalized else None
    output: list[int] = []
    logits = step.prefill(prompt)
    for i in range(s.max_new_tokens):
        if cancel is not None and cancel.is_set():
            return
        if penalized:
            logits = penalize(logits, s, np.concatenate([seen, output]).astype(np.int64), np.array(output, np.int64))
        token = sample(logits, s, rng)
        stats.total_s = time.perf_counter() - start
        if i == 0:
            stats.ttft_s = stats.total_s
        if token in eos_ids and not s.ignore_eos:
            return
        stats.new_tokens = i + 1
        output.append(token)
        yield token
        if i + 1 < s.max_new_tokens and not (cancel is not None and cancel.is_set()):
            logits = step.decode(token)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share (what a cache holding `a` can reuse for `b`)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def reusable_prefix(held: Sequence[int], ids: Sequence[int]) -> int:
    """Cached positions a cache holding `held` keeps for the prompt `ids`: the shared prefix, less
    the prompt's last token when all of it is cached (its logits must be computed again)."""
    return min(common_prefix(held, ids), len(ids) - 1)
