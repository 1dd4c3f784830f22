"""Two ONNX Runtime sessions taking turns in one process (a draft model and its target), with and
without the intra-op threads spinning after a run (session.intra_op.allow_spinning), and one session
alone for comparison.

    .venv/bin/python benchmarks/sessions_taking_turns.py /tmp/q15/ort-int4 /tmp/q05/ort-int4 --json out.json

Each setting runs in a fresh process, settings alternate over --rounds. Per round: 4 draft decode
steps, then a 5-position check on the target (what one speculative round does), then the same check
again right after the target's own run; and 100 decode steps of the draft alone. Medians, ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(target: str, draft: str, spin: str, threads: int) -> dict:
    import numpy as np

    from qwen_edge.runtime.backend import load

    config = {"session.intra_op.allow_spinning": spin}
    big = load(target, threads=threads, all_logits=True, config=config).new_cache()
    small = load(draft, threads=threads, config=config).new_cache()
    rng = np.random.default_rng(0)

    def ids(n):
        return [int(x) for x in rng.integers(100, 20000, n)]

    prompt = ids(150)
    big.append(prompt, last=True)
    small.append(prompt, last=True)
    times = {"draft_step": [], "check_after_draft": [], "check_after_check": [], "draft_alone": []}
    for _ in range(25):
        small.trim(150)
        big.trim(150)
        start = time.perf_counter()
        for _ in range(4):
            small.append(ids(1))
        times["draft_step"].append((time.perf_counter() - start) / 4)
        for key in ("check_after_draft", "check_after_check"):
            big.trim(150)
            start = time.perf_counter()
            big.append(ids(5))
            times[key].append(time.perf_counter() - start)
    small.trim(150)
    for _ in range(100):
        start = time.perf_counter()
        small.append(ids(1))
        times["draft_alone"].append(time.perf_counter() - start)
    return {key: statistics.median(v[3:]) * 1e3 for key, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", type=Path)
    ap.add_argument("draft", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(measure(str(args.target), str(args.draft), args.child, args.threads)))
        return
    runs: dict[str, list[dict]] = {"1": [], "0": []}
    for _ in range(args.rounds):
        for spin in runs:
            cmd = [sys.executable, __file__, str(args.target), str(args.draft), "--threads", str(args.threads)]
            out = subprocess.run([*cmd, "--child", spin], capture_output=True, text=True, check=True).stdout
            runs[spin].append(json.loads(out.strip().splitlines()[-1]))
    report = {}
    for spin, rows in runs.items():
        name = "spinning (ONNX Runtime's default)" if spin == "1" else "no spinning"
        report[name] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(json.dumps({"setting": name, **{k: round(v, 2) for k, v in report[name].items()}}), flush=True)
    if args.json:
        report = {"target": str(args.target), "draft": str(args.draft), **report}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
