"""Wall time and peak RSS of the one-command INT4 exports, ours and optimum-cli's, one at a time.

    .venv/bin/python benchmarks/int4_export_cost.py --work /tmp/cost [--runs 1] [--json OUT.json] \
        [--models qwen2.5-coder-1.5b-instruct] [--hf /tmp/q15/hf]

Per model: `qwen-edge export MODEL --format openvino --quantize int4`, the same with the ONNX `ort`
graph, and (with --hf, an HF folder of the same weights, e.g. written by int4_sweep.py --hf-from)
`optimum-cli export openvino --weight-format int4`. Each command runs under GNU time from this small
parent (so the peak is the command's own), with nothing else running; the output is deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from int4_sweep import gnu_time  # benchmarks/ is on sys.path when run as a script

BIN = os.path.dirname(sys.executable)


def run(cmd: list[str]) -> dict:
    sample = gnu_time(cmd)
    return {"seconds": sample["wall_s"], "peak_rss_gb": sample["peak_rss_bytes"] / 1024 / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--models", nargs="+", default=["qwen2.5-coder-1.5b-instruct"])
    p.add_argument("--hf", type=Path, nargs="*", default=[], help="HF folders for optimum-cli, one per model")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, model in enumerate(args.models):
        out = args.work / "out"
        commands = {
            "ours openvino int4": [f"{BIN}/qwen-edge", "export", model, "-o", str(out), "--format", "openvino",
                                   "--quantize", "int4"],
            "ours onnx int4": [f"{BIN}/qwen-edge", "export", model, "-o", str(out), "--quantize", "int4"],
        }  # fmt: skip
        if i < len(args.hf):
            commands["optimum-cli openvino int4"] = [
                f"{BIN}/optimum-cli", "export", "openvino", "-m", str(args.hf[i]), "--task",
                "text-generation-with-past", "--weight-format", "int4", str(out),
            ]  # fmt: skip
        for name, cmd in commands.items():
            samples = []
            for _ in range(args.runs):
                shutil.rmtree(out, ignore_errors=True)
                samples.append(run(cmd))
                size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            shutil.rmtree(out, ignore_errors=True)
            row = {
                "command": " ".join(cmd),
                "seconds": statistics.median(s["seconds"] for s in samples),
                "peak_rss_gb": statistics.median(s["peak_rss_gb"] for s in samples),
                "folder_bytes": size,
                "samples": samples,
            }
            results[f"{model} {name}"] = row
            print(f"{model} {name}: {row['seconds']:.0f} s, peak {row['peak_rss_gb']:.2f} GB, "
                  f"{size / 1e6:.0f} MB", flush=True)  # fmt: skip
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
