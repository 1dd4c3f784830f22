"""Wall time and peak RSS of the one-command INT4 exports, ours and optimum-cli's, one at a time.

    .venv/bin/python benchmarks/int4_export_cost.py --work /tmp/cost [--runs 1] [--json OUT.json] \
        [--models qwen2.5-coder-1.5b-instruct] [--hf /tmp/q15/hf]
    .venv/bin/python benchmarks/int4_export_cost.py --work /tmp/big --big Qwen2-7B [--cap-gb 20] [--json OUT.json]

Per model: `qwen-edge export MODEL --format openvino --quantize int4`, the same with the ONNX `ort`
graph, and (with --hf, an HF folder of the same weights, e.g. written by int4_sweep.py --hf-from)
`optimum-cli export openvino --weight-format int4`. Each command runs under GNU time from this small
parent (so the peak is the command's own), with nothing else running; the output is deleted after.

--big SHAPE: random weights at a registry shape (Qwen2-7B), written by the tests' own writers
one tensor at a time — a Q8_0 GGUF and a bf16 HF folder in 4 GB shards — then both of our INT4
exports from each, and optimum-cli from the HF folder. A command whose process tree passes
--cap-gb of resident memory is killed (this machine has 23 GB and no swap: a run past it would take
the machine down) and reported as such. Each of our outputs generates a few tokens before it is deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from int4_sweep import gnu_time  # benchmarks/ is on sys.path when run as a script

BIN = os.path.dirname(sys.executable)


def run(cmd: list[str]) -> dict:
    sample = gnu_time(cmd)
    return {"seconds": sample["wall_s"], "peak_rss_gb": sample["peak_rss_bytes"] / 1024 / 1e6}


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total


def capped(cmd: list[str], cap_gb: float) -> dict:
    """`cmd`'s wall time and peak resident memory (GNU time's, of the command itself), killed once
    its process tree, sampled every 0.5 s, passes `cap_gb`."""
    start, sampled = time.perf_counter(), 0
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    while proc.poll() is None:
        sampled = max(sampled, tree_rss(proc.pid))
        if sampled > cap_gb * 1e9:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"seconds": time.perf_counter() - start, "peak_rss_gb": sampled / 1e9, "killed_over_cap_gb": cap_gb}
        time.sleep(0.5)
    seconds, err = time.perf_counter() - start, proc.stderr.read()
    if proc.returncode != 0:
        return {"seconds": seconds, "peak_rss_gb": sampled / 1e9, "failed": err[-1500:]}
    return {"seconds": seconds, "peak_rss_gb": int(err.strip().splitlines()[-1]) * 1024 / 1e9}


def generates(folder: Path) -> dict:
    """Load an export with our runtime and greedy-decode 8 tokens from fixed ids (random weights:
    the point is that the folder runs, and what it costs to load)."""
    code = (
        "import json, sys, time; from qwen_edge.runtime.engine import Engine; t = time.perf_counter(); "
        "e = Engine.load(sys.argv[1]); load = time.perf_counter() - t; "
        "r = e.generate([9707, 11, 1879, 0, 358, 1079], max_new_tokens=8); "
        "print(json.dumps({'load_s': load, 'tokens': r.token_ids, 'ttft_s': r.stats.ttft_s}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1]) if out.returncode == 0 else {"failed": out.stderr[-1500:]}


def big(args) -> None:
    """Random weights at a real shape: our exports from a GGUF and an HF folder, optimum-cli's from the folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from qwen_edge.models.shapes import shape_config
    from tests.gguf_writer import write_random_gguf
    from tests.hf_writer import write_random_hf_folder

    cfg = shape_config(args.big)
    gguf, hf, out = args.work / f"{args.big}.gguf", args.work / f"{args.big}-hf", args.work / "out"
    if not gguf.exists():
        write_random_gguf(cfg, gguf)
    if not (hf / "config.json").exists():
        write_random_hf_folder(cfg, hf)
    ours = lambda src, *fmt: [f"{BIN}/qwen-edge", "export", str(src), "-o", str(out), *fmt, "--quantize", "int4"]  # noqa: E731
    commands = {
        "ours openvino int4 from gguf": ours(gguf, "--format", "openvino"),
        "ours onnx int4 from gguf": ours(gguf),
        # the folder has weights and config only: the tokenizer of the real Qwen2.5 (the fetcher's 0.5B)
        "ours openvino int4 from hf": ours(hf, "--format", "openvino", "--tokenizer", "qwen2.5-coder-0.5b-instruct"),
        "ours onnx int4 from hf": ours(hf, "--tokenizer", "qwen2.5-coder-0.5b-instruct"),
        "optimum-cli openvino int4 from hf": [f"{BIN}/optimum-cli", "export", "openvino", "-m", str(hf), "--task",
                                              "text-generation-with-past", "--weight-format", "int4", str(out)],
    }  # fmt: skip
    results = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}  # --only updates rows
    for name, cmd in commands.items():
        if args.only and not any(o in name for o in args.only):
            continue
        shutil.rmtree(out, ignore_errors=True)
        row = {"command": " ".join(cmd), **capped(cmd, args.cap_gb)}
        if out.exists():
            row["folder_bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            if name.startswith("ours") and "failed" not in row and "killed_over_cap_gb" not in row:
                row["runs"] = generates(out)
        shutil.rmtree(out, ignore_errors=True)
        results[f"{args.big} {name}"] = row
        print(f"{args.big} {name}: {json.dumps({k: v for k, v in row.items() if k != 'command'})}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--models", nargs="+", default=["qwen2.5-coder-1.5b-instruct"])
    p.add_argument("--hf", type=Path, nargs="*", default=[], help="HF folders for optimum-cli, one per model")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.add_argument("--big", help="a registry shape (Qwen2-7B): random weights written here, see above")
    p.add_argument("--cap-gb", type=float, default=20.0, help="--big: kill a command past this resident memory")
    p.add_argument("--only", nargs="*", default=[], help="--big: run only the commands whose name has one of these")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.big:
        return big(args)
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
