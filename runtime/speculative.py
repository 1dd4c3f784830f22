"""Speculative decoding: guess the next tokens — by prompt lookup, from an earlier place where the last
few tokens occurred (in the prompt or the output so far), or with a small draft model — then check all
the guesses in one forward of the target.

Decoding reads every weight once per forward; checking k guesses in one forward reads them once for
up to k + 1 tokens. Code edits repeat much of their prompt, so the guesses are often right.

    engine = Engine.load(folder, speculative=True)      # the backend returns every fed position's logits
    session.generate(prompt, speculative=PromptLookup())
    engine = Engine.load(folder, draft=small_folder)     # every session guesses with the draft model

Greedy: a guess is kept when it is the argmax at its position, so the text is exactly plain greedy
decoding's. Sampling: a guess d is kept with probability p(d) (the draft is deterministic, q = one-hot),
and at the first refusal the token is drawn from p with d removed — the standard speculative
sampling rule, so the output distribution is the plain sampler's. Rejected positions are trimmed
from the KV cache. The number of guesses adapts: up after a fully accepted round, down after a miss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .generate import Sampling, Stats, penalize, probabilities, reusable_prefix


@dataclass(frozen=True)
class PromptLookup:
    max_ngram: int = 3  # the longest tail matched against earlier text
    min_ngram: int = 1
    max_draft: int = 8  # most guesses per forward
    start_draft: int = 4
    # A match on one token is weak evidence, and on the ort graph each guess costs about a quarter
    # of a decode step: guessing one token after it replayed better on both prompt sets
    # (benchmarks/lookup_replay.py, RESULTS.md).
    one_token_draft: int = 1

    def __post_init__(self):
        if not 1 <= self.min_ngram <= self.max_ngram or self.start_draft < 1 or self.max_draft < 1:
            raise ValueError("PromptLookup needs 1 <= min_ngram <= max_ngram, start_draft >= 1 and max_draft >= 1")

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching tail."""
        n_tokens = len(tokens)
        for n in range(min(self.max_ngram, n_tokens - 1), self.min_ngram - 1, -1):
            tail, most = list(tokens[n_tokens - n :]), k if n > 1 else min(k, self.one_token_draft)
            for start in range(n_tokens - n - 1, -1, -1):  # latest first: the freshest context
                if list(tokens[start : start + n]) == tail:
                    follow = list(tokens[start + n : start + n + most])
                    if follow:
                        return follow
        return []


class DraftModel:
    """Guesses from a smaller model with the same tokenizer (Qwen2.5-0.5B for the 1.5B or 7B): its
    greedy next k tokens, from a KV cache of its own that follows the target's text (the shared
    prefix is kept, the rest trimmed), so each round costs the draft k decode steps.

    The guesses are deterministic (the draft's argmax), so the acceptance rule above is exact for
    them too: greedy text is plain greedy decoding's, sampling keeps the target's distribution."""

    def __init__(self, model, max_draft: int = 8, start_draft: int = 4, min_confidence: float = 0.0):
        """`min_confidence`: stop guessing at a token the draft gives less probability than this
        (each guess costs a draft forward; an unsure one is likely refused)."""
        if start_draft < 1 or max_draft < 1 or not 0 <= min_confidence < 1:
            raise ValueError("DraftModel needs start_draft >= 1, max_draft >= 1 and 0 <= min_confidence < 1")
        self.max_draft, self.start_draft, self.min_confidence = max_draft, start_draft, min_confidence
        self.cache, self.tokens = model.new_cache(), []
        self.capacity = model.capacity

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        if k < 1 or len(tokens) + k > self.capacity:
            return []
        keep = reusable_prefix(self.tokens, tokens)  # the last token is fed: its logits give the first guess
        self.cache.trim(keep)
        self.tokens = list(tokens)
        guesses = []
        logits = self.cache.append(list(tokens[keep:]))
        while True:
            best = int(np.argmax(logits))
            if self.min_confidence and _top_probability(logits, best) < self.min_confidence:
                return guesses
            guesses.append(best)
            if len(guesses) == k:
                return guesses  # the last guess is not fed: the next round trims or feeds it
            logits = self.cache.append(guesses[-1:])
            self.tokens.append(guesses[-1])


def _top_probability(logits: np.ndarray, best: int) -> float:
    z = np.asarray(logits, np.float32)
    return float(1.0 / np.exp(z - z[best]).sum())


class VerifyStep(Protocol):
    """What the speculative loop needs of a cache: append ids and get every position's logits,
    and roll back to n positions."""

    def prefill(self, ids: Sequence[int]) -> np.ndarray: ...
    def extend(self, ids: Sequence[int]) -> np.ndarray: ...
    def trim(self, n: int) -> None: ...

    length: int


def generate(
    step: VerifyStep,
    prompt: Sequence[int],
    s: Sampling,
    lookup: PromptLookup | DraftModel,
    eos_ids=(),
    stats: Stats | None = None,
    cancel: threading.Event | None = None,
    history: Sequence[int] = (),
) -> Iterator[int]:
    """runtime.generate.generate with guesses from `lookup` (prompt lookup or a draft model): the
    same tokens (greedy) or the same distribution (sampling); stats.drafted / stats.accepted count
    the guesses."""
    stats = stats if stats is not None else Stats()
    stats.prompt_tokens, rng, start = len(prompt), np.random.default_rng(s.seed), time.perf_counter()
    penalized = s.repetition_penalty != 1.0 or s.presence_penalty != 0.0
    context = [*history, *prompt]  # what guesses are looked up in (and the penalty's "seen")
    output: list[int] = []
    rows = step.prefill(prompt)
    logits, refused, k = rows[-1], None, min(lookup.start_draft, lookup.max_draft)

    def dist(row):
        if penalized:
            row = penalize(row, s, np.array(context, np.int64), np.array(output, np.int64))
        return row

    while len(output) < s.max_new_tokens:
        if cancel is not None and cancel.is_set():
            return
        token = draw(dist(logits), s, rng, refused)
        done = _emit(token, output, context, stats, start, eos_ids, s)
        if done is not None:
            yield from done
            return
        yield token
        room = s.max_new_tokens - len(output)
        draft = lookup.propose(context, min(k, room)) if room > 0 else []
        base = step.length
        rows = step.extend([token, *draft])
        stats.drafted += len(draft)
        refused, kept = None, 0
        for j, guess in enumerate(draft):
            if not accept(dist(rows[j]), s, rng, guess):
                refused, logits = guess, rows[j]
                break
            kept += 1
            stats.accepted += 1
            done = _emit(guess, output, context, stats, start, eos_ids, s)
            if done is not None:
                step.trim(base + 1 + kept)
                yield from done
                return
            yield guess
        else:
            logits = rows[len(draft)]
        if kept < len(draft):
            step.trim(base + 1 + kept)  # forget the refused guess and what followed it
        k = next_guesses(lookup, k, len(draft), kept)


def next_guesses(lookup, k: int, drafted: int, kept: int) -> int:
    """How many tokens to guess next round: 2 more after a fully kept round, one more than were
    kept after a refusal, unchanged when there was nothing to guess."""
    if not drafted:
        return k
    return min(lookup.max_draft, k + 2) if kept == drafted else max(1, kept + 1)


def _emit(token, output, context, stats, start, eos_ids, s) -> list[int] | None:
    """Record `token`; a list of tokens still to yield (empty) when generation ends with it."""
    stats.total_s = time.perf_counter() - start
    if not output and not stats.ttft_s:
        stats.ttft_s = stats.total_s
    if token in eos_ids and not s.ignore_eos:
        return []
    output.append(token)
    context.append(token)
    stats.new_tokens = len(output)
    return None if len(output) < s.max_new_tokens else [token]


def draw(logits: np.ndarray, s: Sampling, rng: np.random.Generator, refused: int | None) -> int:
    if s.temperature <= 0:
        return int(np.argmax(logits))  # greedy never refuses its own argmax: `refused` is not it
    p = probabilities(logits, s)
    if refused is not None:  # the residual max(p - q, 0) for a one-hot q: p without the refused token
        p = p.copy()
        p[refused] = 0.0
        total = p.sum()
        if total <= 0:
            return refused
        p /= total
    return int(rng.choice(p.size, p=p))


def accept(logits: np.ndarray, s: Sampling, rng: np.random.Generator, guess: int) -> bool:
    if s.temperature <= 0:
        return int(np.argmax(logits)) == guess
    return rng.random() < probabilities(logits, s)[guess]
