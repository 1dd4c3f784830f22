"""What `GET /metrics` reports, in Prometheus' text format (counters, gauges, two histograms)."""

from __future__ import annotations

import bisect
import collections
import threading

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # seconds per output token


class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.total, self.n = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float, times: int = 1) -> None:
        at = bisect.bisect_left(self.buckets, value)
        for i in range(at, len(self.buckets)):
            self.counts[i] += times
        self.total += value * times
        self.n += times

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: collections.Counter = collections.Counter()  # (endpoint, status) -> count
        self.finished: collections.Counter = collections.Counter()  # finish reason -> count
        self.prompt_tokens = 0  # computed (a reused prefix is not counted)
        self.completion_tokens = 0
        self.drafted_tokens = 0  # prompt-lookup guesses checked, and kept
        self.accepted_tokens = 0
        self.queue_depth = 0
        self.active = 0
        self.peak_active = 0  # most sequences decoded in one step so far
        self.ttft = Histogram(TTFT_BUCKETS)
        self.per_token = Histogram(TOKEN_BUCKETS)

    def request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1

    def observe_ttft(self, seconds: float) -> None:
        with self.lock:
            self.ttft.observe(seconds)

    def observe_decode(self, tokens: int, seconds: float) -> None:
        with self.lock:
            self.per_token.observe(seconds / tokens, tokens)

    def render(self) -> str:
        p = "qwen_edge"
        with self.lock:
            lines = [f"# TYPE {p}_requests_total counter"]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'{p}_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += [f"# TYPE {p}_finished_total counter"]
            lines += [f'{p}_finished_total{{reason="{r}"}} {n}' for r, n in sorted(self.finished.items())]
            for name, kind, value in (
                ("prompt_tokens_total", "counter", self.prompt_tokens),
                ("completion_tokens_total", "counter", self.completion_tokens),
                ("draft_tokens_total", "counter", self.drafted_tokens),
                ("draft_tokens_accepted_total", "counter", self.accepted_tokens),
                ("queue_depth", "gauge", self.queue_depth),
                ("active_sequences", "gauge", self.active),
                ("active_sequences_peak", "gauge", self.peak_active),
            ):
                lines += [f"# TYPE {p}_{name} {kind}", f"{p}_{name} {value}"]
            lines += [f"# TYPE {p}_time_to_first_token_seconds histogram"]
            lines += self.ttft.lines(f"{p}_time_to_first_token_seconds")
            lines += [f"# TYPE {p}_time_per_output_token_seconds histogram"]
            lines += self.per_token.lines(f"{p}_time_per_output_token_seconds")
        return "\n".join(lines) + "\n"
