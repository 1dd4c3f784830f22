"""How fast openvino_genai.LLMPipeline runs an IR folder: ours against optimum-cli's, side by side.

    .venv/bin/python benchmarks/openvino_ir_speed.py OURS_FOLDER OPTIMUM_FOLDER [--runs 5]
        [--prompt 128] [--new 32] [--json out.json]

Every folder is loaded once; the runs are interleaved (folder A, B, A, B, ...) after one warm-up
each. Each run feeds a different random prompt of --prompt token ids (fixed seed) and generates
--new tokens with EOS ignored. Reported: the median of LLMPipeline's own TTFT and decode
throughput. The CPU plugin's defaults are kept (that is what users get).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--json")
    args = p.parse_args()

    import openvino as ov
    import openvino_genai

    pipes = {str(f): openvino_genai.LLMPipeline(str(f), "CPU") for f in args.folders}
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens, config.ignore_eos, config.do_sample = args.new, True, False
    rng = np.random.default_rng(0)
    samples = {name: [] for name in pipes}
    for run in range(args.runs + 1):
        ids = rng.integers(1000, 100_000, (1, args.prompt), dtype=np.int64)
        inputs = openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        for name, pipe in pipes.items():
            metrics = pipe.generate(inputs, config).perf_metrics
            if run == 0:
                continue  # warm-up
            sample = {"ttft_s": metrics.get_ttft().mean / 1e3, "decode_tok_s": 1e3 / metrics.get_tpot().mean}
            samples[name].append(sample)
            print(f"run {run} {name}: TTFT {sample['ttft_s']:.3f} s, decode {sample['decode_tok_s']:.1f} tok/s")
    for name, s in samples.items():
        ttft = statistics.median(x["ttft_s"] for x in s)
        tok_s = statistics.median(x["decode_tok_s"] for x in s)
        print(f"{name}: median TTFT {ttft:.3f} s, decode {tok_s:.1f} tok/s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "samples": samples}, indent=2)
        )


if __name__ == "__main__":
    main()
