"""GGUF to torch: our loader against transformers' GGUF loader and against gguf-py's reader +
dequantizer (what our loader used before), each in a fresh process, median of --runs.

    .venv/bin/python benchmarks/gguf_load.py [--runs 3] [--json out.json] [MODEL ...]

MODEL: a known name (default: both real Qwen2.5-Coder GGUFs) or a .gguf path. "ours" is
qwen_edge.models.loaders.load (parse, dequantize, build the module; the tokenizer is cached after
the first build, so it is timed separately, from an empty cache); "transformers" is
AutoModelForCausalLM.from_pretrained(gguf_file=...) in fp32; "gguf-py" is GGUFReader plus
gguf.dequantize of every tensor (no module built). Peak RSS: the child's own getrusage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, resource, sys, tempfile, time, os
kind, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if kind == "ours":
    from qwen_edge.models.loaders import load
    load(path)
elif kind == "ours, tokenizer from empty cache":
    os.environ["QWEN_EDGE_CACHE"] = tempfile.mkdtemp()
    import atexit, shutil
    atexit.register(shutil.rmtree, os.environ["QWEN_EDGE_CACHE"], True)  # the empty cache it filled goes too
    from qwen_edge.models import gguf_file, loaders
    reader = gguf_file.GGUFFile(path)
    t = time.perf_counter()
    loaders.gguf_tokenizer(__import__("pathlib").Path(path), None, gguf_file.read_config(path, reader), reader)
elif kind == "transformers":
    import torch
    from transformers import AutoModelForCausalLM
    p = __import__("pathlib").Path(path)
    AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
elif kind == "transformers tokenizer":
    from transformers import AutoTokenizer
    p = __import__("pathlib").Path(path)
    AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
else:
    import numpy as np
    from gguf import GGUFReader, dequantize
    r = GGUFReader(path)
    for tensor in r.tensors:
        np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32)
print(json.dumps({"s": time.perf_counter() - t, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
KINDS = ("ours", "transformers", "gguf-py", "ours, tokenizer from empty cache", "transformers tokenizer")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    from qwen_edge.models.fetch import KNOWN_FILES, fetch

    rows = {}
    for model in args.models:
        path = str(fetch(KNOWN_FILES[model])) if model in KNOWN_FILES else model
        for r in range(args.runs):
            for kind in KINDS:  # interleaved: the machine's drift hits every kind alike
                out = subprocess.run([sys.executable, "-c", WORKER, kind, path], capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{kind} on {path} failed: {out.stderr.strip().splitlines()[-1]}")
                sample = json.loads(out.stdout.strip().splitlines()[-1])
                rows.setdefault((model, kind), []).append(sample)
                print(f"run {r} {model} {kind}: {sample['s']:.1f} s, peak {sample['peak_mb']:.0f} MB", flush=True)
    print("\n| model | loader | seconds (median) | peak RSS MB |\n|---|---|---|---|")
    for (model, kind), samples in rows.items():
        s = statistics.median(x["s"] for x in samples)
        peak = statistics.median(x["peak_mb"] for x in samples)
        print(f"| {model} | {kind} | {s:.1f} | {peak:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{m} | {k}": v for (m, k), v in rows.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
