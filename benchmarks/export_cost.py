"""Time and peak RSS of one export, each in a fresh process (so peaks do not carry over).

    .venv/bin/python benchmarks/export_cost.py Qwen2-0.5B --runs 3 [--graph portable] [--compare-optimum]

Prints the median and spread; --json writes every raw sample. --compare-optimum also runs
`optimum-cli export onnx` on the same shape (saved as an HF folder first) when optimum-onnx exists.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def measure(cmd: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    # ru_maxrss of the children reaped so far: each run is measured in a fresh parent below.
    return {"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6}


def run_fresh(cmd: list[str]) -> dict:
    """Run cmd from a fresh interpreter so RUSAGE_CHILDREN holds only that command."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import json, sys; sys.path.insert(0, {here!r}); from export_cost import measure; "
    code += "print(json.dumps(measure(sys.argv[1:])))"
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


def one_run(shape: str, graph: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        exporter = [os.path.join(os.path.dirname(sys.executable), "qwen-edge"), "export", shape, "-o", f"{tmp}/out"]
        sample = run_fresh([*exporter, "--graph", graph, *extra])
        sample["bytes"] = folder_bytes(f"{tmp}/out")
        return sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shape", nargs="?", default="Qwen2-0.5B")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--graph", default="portable")
    p.add_argument("--json", help="write raw samples here")
    args, extra = p.parse_known_args()
    samples = [one_run(args.shape, args.graph, extra) for _ in range(args.runs)]
    for key in ("seconds", "peak_rss_gb"):
        values = [s[key] for s in samples]
        spread = f"min {min(values):.2f}, max {max(values):.2f}"
        print(f"{args.shape} {args.graph} {key}: median {statistics.median(values):.2f} ({spread})")
    print(f"{args.shape} {args.graph} folder: {samples[0]['bytes'] / 1e9:.2f} GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": args.shape, "graph": args.graph, "extra": extra, "samples": samples}, f, indent=2)


if __name__ == "__main__":
    main()
