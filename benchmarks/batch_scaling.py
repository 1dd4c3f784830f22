"""One decode step for B sequences in one forward (Backend.new_batch + forward), B = 1, 2, 4, 8:
what continuous batching in `qwen-edge serve` can gain at most, without HTTP or prefill.

    .venv/bin/python benchmarks/batch_scaling.py /tmp/real-ort4 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=128, help="tokens each sequence holds before the steps")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    from qwen_edge.runtime import backend

    model = backend.load(args.folder, threads=args.threads)
    rng = np.random.default_rng(0)
    base = None
    for n in (1, 2, 4, 8):
        rows = model.new_batch(n)
        for row in rows:
            row.append(rng.integers(100, 5000, args.context).tolist())
        model.forward(rows, [[5]] * n)
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.forward(rows, [[5]] * n)
            times.append(time.perf_counter() - start)
        step = statistics.median(times)
        base = base or n / step
        print(f"B={n}: step {step * 1000:.1f} ms, {n / step:.1f} tok/s ({n / step / base:.2f}x B=1)")
    start = time.perf_counter()
    model.new_cache().append(rng.integers(100, 5000, args.context).tolist())
    print(f"prefill of {args.context} tokens: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
