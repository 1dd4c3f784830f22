"""Start-up on OpenVINO: load time and the first answers, each in a fresh process, with and
without the compiled-model cache (CACHE_DIR), ours against openvino_genai's LLMPipeline.

    .venv/bin/python benchmarks/ov_cold_start.py FOLDER [--rounds 3] [--prompt 47] [--json out.json]

Per round and mode a new process loads FOLDER and answers two different prompts of --prompt
token ids (4 new tokens each). Modes: "no cache"; "cache, cold" (an empty CACHE_DIR: what the
first run after install sees); "cache, warm" (the CACHE_DIR the cold run filled: every later run);
for ours also "warm-up at load" (Engine.load(warm_up=True), what chat and serve do: its time is
in the load column). Reported: medians of load, first TTFT and second TTFT.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, sys, time
import numpy as np
folder, runtime, cache, n, warm = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
rng = np.random.default_rng(1)
prompts = [rng.integers(1000, 100_000, n).tolist() for _ in range(2)]
t = time.perf_counter()
if runtime == "ours":
    from qwen_edge.runtime.engine import Engine
    engine = Engine.load(folder, cache_dir=cache or False, warm_up=warm)
    load_s = time.perf_counter() - t
    ttfts = [engine.session().generate(p, max_new_tokens=4).stats.ttft_s for p in prompts]
else:
    import openvino as ov, openvino_genai
    pipe = openvino_genai.LLMPipeline(folder, "CPU", **({"CACHE_DIR": cache} if cache else {}))
    load_s = time.perf_counter() - t
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens, config.ignore_eos = 4, True
    ttfts = []
    for p in prompts:
        ids = np.array([p], dtype=np.int64)
        m = pipe.generate(openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids))), config)
        ttfts.append(m.perf_metrics.get_ttft().mean / 1e3)
print(json.dumps({"load_s": load_s, "ttft1_s": ttfts[0], "ttft2_s": ttfts[1]}))
"""


def run(folder: Path, runtime: str, cache: str, prompt: int, warm: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(folder), runtime, cache, str(prompt), "1" if warm else "0"],
        capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt", type=int, default=47)
    p.add_argument("--json")
    args = p.parse_args()
    samples: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for runtime in ("ours", "openvino_genai"):
            cache = tempfile.mkdtemp(prefix="ov-cache-")
            try:
                modes = [("no cache", "", False), ("cache, cold", cache, False), ("cache, warm", cache, False)]
                if runtime == "ours":
                    modes.append(("cache, warm + warm-up at load", cache, True))
                for mode, where, warm in modes:
                    s = run(args.folder, runtime, where, args.prompt, warm)
                    samples.setdefault(f"{runtime}: {mode}", []).append(s)
                    print(f"round {r} {runtime} {mode}: {json.dumps({k: round(v, 3) for k, v in s.items()})}")
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    print(f"\n| {args.folder.name} | load | first TTFT ({args.prompt} tokens) | second TTFT |\n|---|---|---|---|")
    for name, s in samples.items():
        med = {k: statistics.median(x[k] for x in s) for k in s[0]}
        print(f"| {name} | {med['load_s']:.2f} s | {med['ttft1_s'] * 1e3:.0f} ms | {med['ttft2_s'] * 1e3:.0f} ms |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                               "samples": samples}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
