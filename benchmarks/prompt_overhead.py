"""Wall time of Engine.generate on a text prompt against the engine's own TTFT: what the Python
around the model costs (tokenizing, checks, streaming).

    .venv/bin/python benchmarks/prompt_overhead.py FOLDER [--tokens 256] [--new 8] [--runs 3]

The prompt is --tokens tokens of this repository's runtime/engine.py, decoded back to text.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--new", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    from qwen_edge.runtime import Engine

    engine = Engine.load(args.folder)
    text = (Path(__file__).resolve().parents[1] / "runtime" / "engine.py").read_text()
    prompt = engine.tokenizer.decode(engine.tokenizer.encode(text)[: args.tokens])
    engine.generate(prompt[:100], max_new_tokens=2)  # warm-up
    walls, ttfts = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = engine.generate(prompt, max_new_tokens=args.new, ignore_eos=True)
        walls.append(time.perf_counter() - start)
        ttfts.append(result.stats.ttft_s)
    print(f"{len(result.prompt_token_ids)}-token prompt, {args.new} new: wall {statistics.median(walls):.2f} s, "
          f"engine TTFT {statistics.median(ttfts):.2f} s (medians of {args.runs})")  # fmt: skip


if __name__ == "__main__":
    main()
