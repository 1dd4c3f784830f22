"""Continuous batching on OpenVINO folders through openvino_genai's ContinuousBatchingPipeline
(it loads our stateful IR folder as it is): paged KV cache, prompts split and fused with decode
steps, prefix caching. Measured against interleaving batch-1 requests on our own runtime, it is
the faster (benchmarks/RESULTS.md), so `qwen-edge serve` uses it for OpenVINO folders.

Same interface as scheduler.Scheduler: submit(job), close(), `active`, `waiting`. Tokens come back
from the pipeline's handles after each step; text, stop strings and limits are handled here as
the scheduler does, so both paths stream alike.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time

import numpy as np

from qwen_edge.runtime.streaming import TextStreamer

from .metrics import Metrics
from .scheduler import Job, QueueFull

log = logging.getLogger(__name__)


class GenaiScheduler:
    def __init__(self, engine, parallel: int, max_queue: int, metrics: Metrics, cache_gb: float = 1.0):
        import openvino_genai as ov_genai

        self.engine, self.parallel, self.max_queue, self.metrics = engine, parallel, max_queue, metrics
        config = ov_genai.SchedulerConfig()
        config.cache_size = max(1, round(cache_gb))  # GB of KV blocks
        config.max_num_seqs = parallel
        config.enable_prefix_caching = True
        self.pipe = ov_genai.ContinuousBatchingPipeline(str(engine.folder), config, engine.device, engine.properties)
        self.ov_genai = ov_genai
        self.ids = itertools.count()
        self.active: dict[int, tuple[Job, object, TextStreamer]] = {}
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="qwen-edge-genai", daemon=True)
        self.thread.start()

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
        self.thread.join(timeout=10)

    def _config(self, job: Job):
        s, c = job.sampling, self.ov_genai.GenerationConfig()
        c.max_new_tokens, c.ignore_eos = s.max_new_tokens, s.ignore_eos
        c.eos_token_id = self.engine.tokenizer.eos_token_ids[0] if self.engine.tokenizer.eos_token_ids else -1
        c.stop_token_ids = set(self.engine.tokenizer.eos_token_ids)
        c.repetition_penalty, c.presence_penalty = s.repetition_penalty, s.presence_penalty
        if s.temperature > 0:
            c.do_sample, c.temperature, c.top_p = True, s.temperature, s.top_p
            c.top_k = s.top_k if s.top_k > 0 else 0
            c.rng_seed = s.seed if s.seed is not None else int(time.time_ns() & 0x7FFFFFFF)
        else:
            c.do_sample = False
        return c

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.closed and not self.waiting and not self.active:
                    self.wake.wait()
                if self.closed:
                    return
                while self.waiting and len(self.active) < self.parallel:
                    self._admit(self.waiting.popleft())
                self.metrics.queue_depth = len(self.waiting)
            try:
                for rid, (job, handle, _) in list(self.active.items()):
                    if job.cancelled.is_set():
                        handle.cancel()
                        self._finish(rid, "cancelled")
                if self.active:
                    self.metrics.peak_active = max(self.metrics.peak_active, len(self.active))
                    self.pipe.step()
                    self._collect()
            except Exception as e:  # a pipeline failure ends the requests it touched, not the server
                log.exception("generation failed")
                for rid in list(self.active):
                    self._finish(rid, "error", str(e).splitlines()[0] if str(e) else type(e).__name__)
            self.metrics.active = len(self.active)

    def _admit(self, job: Job) -> None:
        import openvino as ov

        if job.cancelled.is_set():
            return job.emit("end", "cancelled")
        rid = next(self.ids)
        handle = self.pipe.add_request(rid, ov.Tensor(np.array([job.prompt], np.int64)), self._config(job))
        self.active[rid] = (job, handle, TextStreamer(self.engine.tokenizer.decode, job.stop))
        self.metrics.prompt_tokens += len(job.prompt)

    def _collect(self) -> None:
        status = self.ov_genai.GenerationStatus
        for rid, (job, handle, _) in list(self.active.items()):
            while handle.can_read():
                for output in handle.read().values():
                    for token in output.generated_ids:
                        if self._take(rid, int(token)):
                            break
                if rid not in self.active:
                    break
            if rid in self.active and handle.get_status() not in (status.RUNNING,):
                self._finish(rid, "length" if len(job.output) >= job.sampling.max_new_tokens else "stop")

    def _take(self, rid: int, token: int) -> bool:
        """One generated token of request `rid`: stream it; True when the request ended."""
        job, handle, streamer = self.active[rid]
        if job.first_token_s is None:
            job.first_token_s = time.perf_counter() - job.submitted
            self.metrics.observe_ttft(job.first_token_s)
        if token in self.engine.tokenizer.eos_token_ids and not job.sampling.ignore_eos:
            handle.stop()
            self._finish(rid, "stop")
            return True
        job.output.append(token)
        self.metrics.completion_tokens += 1
        piece = streamer.put(token)
        if piece:
            job.emit("text", piece)
        if streamer.stopped:
            handle.stop()
            self._finish(rid, "stop")
            return True
        if len(job.output) >= job.sampling.max_new_tokens:
            handle.stop()
            self._finish(rid, "length")
            return True
        return False

    def _finish(self, rid: int, reason: str, message: str = "") -> None:
        job, _, streamer = self.active.pop(rid)
        if reason in ("stop", "length"):
            tail = streamer.end()
            if tail:
                job.emit("text", tail)
        if job.first_token_s is not None and len(job.output) > 1:
            elapsed = time.perf_counter() - job.submitted
            self.metrics.observe_decode(len(job.output) - 1, elapsed - job.first_token_s)
        self.metrics.finished[reason] += 1
        job.emit("end", reason, message)
