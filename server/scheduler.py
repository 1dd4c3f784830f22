"""Continuous batching: one thread owns the model and runs every admitted request together.

Each step the scheduler admits waiting requests into free cache rows (a prefill each, reusing the
longest prefix a free row still holds from an earlier request), then runs one decode step for all
active requests in a single forward (`Backend.forward` over rows of one buffer on the ort graph;
one call per sequence on backends without a batched graph). A request leaves when it reaches end
of text, a stop string, its token limit or the context, or is cancelled (its client went away);
its row is free for the next one at the next step.

With prompt lookup (`lookup`, a runtime.speculative.PromptLookup) or a draft model (an engine loaded
with `draft=`: each row gets a runtime.speculative.DraftModel, a draft KV cache that follows the
row's text), a request that has guesses feeds its next token and the guesses to its own row in one
forward, and keeps the guesses the model agrees with, by runtime.speculative's rule (greedy: the
same text; sampling: the same distribution); its row is trimmed past the first refusal. Requests
with no guess decode together as before.

Results reach the asyncio side through `loop.call_soon_threadsafe` on the job's queue: events
("text", piece), then ("end", finish_reason).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from qwen_edge.runtime.generate import Sampling, common_prefix, penalize, reusable_prefix
from qwen_edge.runtime.speculative import DraftModel, PromptLookup, accept, draw, next_guesses
from qwen_edge.runtime.streaming import TextStreamer

from .metrics import Metrics

log = logging.getLogger(__name__)

# A prefix shorter than this is recomputed rather than reused: it saves little, and a prompt split
# at a different point computes in a different order (bf16 on OpenVINO's CPU plugin), which may
# flip a greedy near-tie; a continued conversation shares far more.
MIN_REUSE = 32


@dataclass
class Job:
    prompt: list[int]
    sampling: Sampling
    stop: tuple[str, ...]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    output: list[int] = field(default_factory=list)
    reused: int = 0
    first_token_s: float | None = None
    streamer: TextStreamer | None = None  # set when admitted
    drafted: int = 0  # prompt-lookup guesses checked, and kept
    accepted: int = 0
    guesses: int = 0  # how many to guess next round (adapts to what is kept)
    refused: int | None = None  # the guess the model refused last: not to be drawn again (sampling)

    def emit(self, *event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class QueueFull(Exception):
    """More requests are waiting than the server was told to hold."""


class Inbox:
    """The waiting requests, shared by the request side and one scheduler thread."""

    def __init__(self, max_queue: int, metrics: Metrics):
        self.max_queue, self.metrics = max_queue, metrics
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.closed = False

    def submit(self, job: Job) -> None:
        with self.wake:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull
            self.waiting.append(job)
            self.metrics.queue_depth = len(self.waiting)
            self.wake.notify()

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()

    def take(self, free: int, busy: bool) -> list[Job] | None:
        """Up to `free` waiting jobs (a cancelled one is answered and skipped); waits while there
        is nothing to do (no job waiting and `busy` False); None once closed."""
        with self.wake:
            while not self.closed and not self.waiting and not busy:
                self.wake.wait()
            if self.closed:
                return None
            jobs = []
            while self.waiting and len(jobs) < free:
                job = self.waiting.popleft()
                if job.cancelled.is_set():
                    job.emit("end", "cancelled")
                else:
                    jobs.append(job)
            self.metrics.queue_depth = len(self.waiting)
            return jobs


def record(job: Job, token: int, eos_ids, metrics: Metrics) -> str | None:
    """A new token of `job`: stream its text; the finish reason when the job ends with it."""
    if job.first_token_s is None:
        job.first_token_s = time.perf_counter() - job.submitted
        metrics.observe_ttft(job.first_token_s)
    if token in eos_ids and not job.sampling.ignore_eos:
        return "stop"
    job.output.append(token)
    metrics.completion_tokens += 1
    piece = job.streamer.put(token)
    if piece:
        job.emit("text", piece)
    if job.streamer.stopped:
        return "stop"
    return "length" if len(job.output) >= job.sampling.max_new_tokens else None


def end(job: Job, reason: str, metrics: Metrics, message: str = "") -> None:
    """Send what the streamer held back, count the job, and tell its request it is over."""
    if reason in ("stop", "length"):
        tail = job.streamer.end()
        if tail:
            job.emit("text", tail)
    if job.first_token_s is not None and len(job.output) > 1:
        elapsed = time.perf_counter() - job.submitted
        metrics.observe_decode(len(job.output) - 1, elapsed - job.first_token_s)
    metrics.finished[reason] += 1
    job.emit("end", reason, message)


class Scheduler:
    def __init__(self, engine, parallel: int, max_queue: int, metrics: Metrics, lookup: PromptLookup | None = None):
        self.engine, self.metrics = engine, metrics
        self.rows = engine.model.new_batch(parallel)
        # who guesses for each row: prompt lookup (no state: one for all), or the engine's draft model
        # (a KV cache of its own per row); None: nobody
        draft = getattr(engine, "draft", None)
        if draft is not None:
            self.guessers = [DraftModel(draft.model, min_confidence=engine.draft_confidence) for _ in self.rows]
        else:
            self.guessers = [lookup] * len(self.rows) if lookup is not None else None
        self.held: list[list[int]] = [[] for _ in self.rows]  # ids each row's cache holds
        self.active: dict[int, tuple[Job, np.random.Generator, int]] = {}  # row -> job, its rng, next token
        self.inbox = Inbox(max_queue, metrics)
        self.submit, self.waiting = self.inbox.submit, self.inbox.waiting
        self.thread = threading.Thread(target=self._run, name="qwen-edge-scheduler", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.inbox.close()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while (admitted := self.inbox.take(len(self.rows) - len(self.active), bool(self.active))) is not None:
            try:
                for job in admitted:
                    self._admit(job)
                if self.active:
                    self.metrics.peak_active = max(self.metrics.peak_active, len(self.active))
                    self._decode()
            except Exception as e:  # a backend failure ends the requests it touched, not the server
                log.exception("generation failed")
                for row in list(self.active):
                    self._finish(row, "error", str(e).splitlines()[0] if str(e) else type(e).__name__)
            self.metrics.active = len(self.active)

    def _free_row(self, prompt: list[int]) -> tuple[int, int]:
        """The free row holding the longest prefix of `prompt` (a continued conversation), and the
        length to reuse: that prefix's, kept below len(prompt) so the last prompt token is computed,
        or 0 under MIN_REUSE."""
        free = [r for r in range(len(self.rows)) if r not in self.active]
        best = max(free, key=lambda r: common_prefix(self.held[r], prompt))  # the first free row on a tie
        keep = reusable_prefix(self.held[best], prompt)
        return best, keep if keep >= MIN_REUSE else 0

    def _admit(self, job: Job) -> None:
        row, keep = self._free_row(job.prompt)
        cache = self.rows[row]
        cache.trim(keep)
        self.held[row] = self.held[row][:keep]
        job.reused = keep
        try:
            logits = cache.append(job.prompt[keep:], last=True)
        except Exception as e:  # this request's prefill failed (e.g. over the context): it alone ends
            log.warning("prefill failed: %s", e)
            self.metrics.finished["error"] += 1
            return job.emit("end", "error", str(e).splitlines()[0] if str(e) else type(e).__name__)
        self.held[row] = list(job.prompt)
        job.streamer = TextStreamer(self.engine.tokenizer.decode, job.stop)
        self.active[row] = (job, np.random.default_rng(job.sampling.seed), 0)
        self.metrics.prompt_tokens += len(job.prompt) - keep
        if self.guessers is not None:
            job.guesses = min(self.guessers[row].start_draft, self.guessers[row].max_draft)
        self._take(row, logits)

    def _decode(self) -> None:
        guessed = {r: self._guesses(r) for r in self.active} if self.guessers is not None else {}
        rows = [r for r in self.active if not guessed.get(r)]
        if rows:
            tokens = [self.active[r][2] for r in rows]
            logits = self.engine.model.forward([self.rows[r] for r in rows], [[t] for t in tokens])
            for r, token, lg in zip(rows, tokens, logits, strict=True):
                self.held[r].append(token)
                self._take(r, lg[-1] if lg.ndim == 2 else lg)  # one position's, however the backend shapes it
        for r, draft in guessed.items():
            if draft and r in self.active:
                self._check(r, draft)

    def _guesses(self, row: int) -> list[int]:
        job = self.active[row][0]
        room = min(job.sampling.max_new_tokens - len(job.output), self.rows[row].capacity - len(self.held[row]) - 2)
        if room < 1 or job.cancelled.is_set():
            return []
        return self.guessers[row].propose([*job.prompt, *job.output], min(job.guesses, room))

    def _check(self, row: int, draft: list[int]) -> None:
        """Feed the row's next token and its guesses in one forward; keep the guesses the model
        agrees with (runtime.speculative's rule), trim the row after the first refusal."""
        job, rng, token = self.active[row]
        cache, base = self.rows[row], len(self.held[row])
        logits = cache.append([token, *draft])
        job.drafted += len(draft)
        self.metrics.drafted_tokens += len(draft)
        kept, reason = 0, None
        for j, guess in enumerate(draft):
            if not accept(self._penalized(job, logits[j]), job.sampling, rng, guess):
                job.refused = guess
                break
            kept += 1
            job.accepted += 1
            self.metrics.accepted_tokens += 1
            reason = record(job, guess, self.engine.tokenizer.eos_token_ids, self.metrics)
            if reason is not None:
                break
        cache.trim(base + 1 + kept)  # the next token and the kept guesses stay
        self.held[row] += [token, *draft[:kept]]
        if reason is not None:
            return self._finish(row, reason)
        job.guesses = next_guesses(self.guessers[row], job.guesses, len(draft), kept)
        self._take(row, logits[kept])

    def _penalized(self, job: Job, logits: np.ndarray) -> np.ndarray:
        s = job.sampling
        if s.repetition_penalty != 1.0 or s.presence_penalty != 0.0:
            seen = np.array([*job.prompt, *job.output], np.int64)
            return penalize(logits, s, seen, np.array(job.output, np.int64))
        return logits

    def _take(self, row: int, logits: np.ndarray) -> None:
        """Sample the next token of the job in `row` from `logits`, as runtime.generate does (not
        the guess the model just refused, under speculative sampling's rule); stream its text, or
        finish the job."""
        job, rng, _ = self.active[row]
        if job.cancelled.is_set():
            return self._finish(row, "cancelled")
        token = draw(self._penalized(job, logits), job.sampling, rng, job.refused)
        job.refused = None
        reason = record(job, token, self.engine.tokenizer.eos_token_ids, self.metrics)
        if reason is None and len(self.held[row]) + 1 > self.rows[row].capacity:
            reason = "length"
        if reason is not None:
            return self._finish(row, reason)
        self.active[row] = (job, rng, token)

    def _finish(self, row: int, reason: str, message: str = "") -> None:
        job, _, _ = self.active.pop(row)
        self.metrics.active = len(self.active)  # before the client hears of the end, not after the step
        end(job, reason, self.metrics, message)
