"""Continuous batching on OpenVINO folders through openvino_genai's ContinuousBatchingPipeline
(it loads our stateful IR folder as it is): paged KV cache, prompts split and fused with decode
steps, prefix caching. Measured against interleaving batch-1 requests on our own runtime, it is
the faster (benchmarks/RESULTS.md), so `qwen-edge serve` uses it for OpenVINO folders.

Same interface as scheduler.Scheduler: submit(job), close(), `active`, `waiting`. Tokens come back
from the pipeline's handles after each step; text, stop strings and limits are handled here as
the scheduler does, so both paths stream alike.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

import numpy as np

from qwen_edge.runtime.streaming import TextStreamer

from .metrics import Metrics
from .scheduler import Inbox, Job, end, record

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
        self._warm_up()
        self.ids = itertools.count()
        self.active: dict[int, tuple[Job, object]] = {}  # request id -> job, its pipeline handle
        self.inbox = Inbox(max_queue, metrics)
        self.submit, self.waiting = self.inbox.submit, self.inbox.waiting
        self.thread = threading.Thread(target=self._run, name="qwen-edge-genai", daemon=True)
        self.thread.start()

    def _warm_up(self) -> None:
        """One token before the first request: OpenVINO repacks the weights on a model's first
        inference (6 s of TTFT on the 1.5B INT4 IR), which the first client would otherwise wait for."""
        import numpy as np
        import openvino as ov

        config = self.ov_genai.GenerationConfig()
        config.max_new_tokens, config.ignore_eos = 1, True
        self.pipe.generate([ov.Tensor(np.zeros((1, 1), dtype=np.int64))], [config])

    def close(self) -> None:
        self.inbox.close()
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
        while (admitted := self.inbox.take(self.parallel - len(self.active), bool(self.active))) is not None:
            try:
                for job in admitted:
                    self._admit(job)
                for rid, (job, handle) in list(self.active.items()):
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

        rid = next(self.ids)
        handle = self.pipe.add_request(rid, ov.Tensor(np.array([job.prompt], np.int64)), self._config(job))
        job.streamer = TextStreamer(self.engine.tokenizer.decode, job.stop)
        self.active[rid] = (job, handle)
        self.metrics.prompt_tokens += len(job.prompt)

    def _collect(self) -> None:
        status = self.ov_genai.GenerationStatus
        for rid, (job, handle) in list(self.active.items()):
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
        job, handle = self.active[rid]
        reason = record(job, token, self.engine.tokenizer.eos_token_ids, self.metrics)
        if reason is None:
            return False
        handle.stop()
        self._finish(rid, reason)
        return True

    def _finish(self, rid: int, reason: str, message: str = "") -> None:
        job, _ = self.active.pop(rid)
        self.metrics.active = len(self.active)  # before the client hears of the end, not after the step
        end(job, reason, self.metrics, message)
