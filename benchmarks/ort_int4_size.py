"""The INT4 `ort` folder's size and accuracy against optimum-cli's INT4 IR (issue #19): export a real
model with the default recipe, measure its weights and folder bytes, score it against a float
export on WikiText-2 and the held-out code text (benchmarks/int4_sweep.py's), and measure the
resident memory of an ONNX Runtime session that has loaded it and run one 128-token prefill.

    .venv/bin/python benchmarks/ort_int4_size.py --model qwen2.5-coder-0.5b-instruct --reference REF \
        --work /tmp/ortsize [--before OLD_ORT_FOLDER ...] [--json OUT.json]

REF: the float export every row is scored against (the fp32 `ort` export, or the fp16 IR). --before:
folders made by earlier versions, scored and measured the same way, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from int4_sweep import held_out_text  # noqa: E402

BIN = os.path.dirname(sys.executable)
WIKI = Path(__file__).resolve().parents[1].parent / "shared/data/wikitext-2-raw/wiki.test.raw"


def resident(folder: Path) -> dict:
    """In a fresh process: an ONNX Runtime session on the folder's runtime graph, as our runtime
    opens it, after one 128-token prefill — resident and peak memory in MB."""
    code = f"""
import json, re, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
o.inter_op_num_threads = 1
s = ort.InferenceSession({str(folder / "model_last_logits.onnx")!r}, o, providers=["CPUExecutionProvider"])
feeds = {{"input_ids": np.arange(1000, 1128)[None], "attention_mask": np.ones((1, 128), np.int64),
          "num_logits": np.array([1], np.int64)}}
for i in s.get_inputs():
    if i.name.startswith("past"):
        feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
s.run(None, feeds)
status = open("/proc/self/status").read()  # VmHWM: getrusage's peak carries over a big parent's
kb = {{k: int(re.search(k + r":\\s+(\\d+)", status).group(1)) for k in ("VmRSS", "VmHWM")}}
print(json.dumps({{"resident_mb": kb["VmRSS"] / 1024, "peak_mb": kb["VmHWM"] / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def score(folder: Path, reference: Path, code: Path, windows: int) -> dict:
    from qwen_edge.quantize.evaluate import evaluate

    keep = ("perplexity", "reference_perplexity", "perplexity_increase", "top1_agreement", "generation")
    row = {}
    for name, text in (("wikitext2", WIKI), ("code", code)):
        scores = evaluate(folder, reference, str(text), windows).to_dict()
        row[name] = {k: scores[k] for k in keep if k in scores}
    return row


def sizes(folder: Path) -> dict:
    files = [f for f in folder.rglob("*") if f.is_file()]
    return {
        "weights_bytes": sum(f.stat().st_size for f in files if f.name == "model.onnx.data"),
        "folder_bytes": sum(f.stat().st_size for f in files),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/ortsize"))
    p.add_argument("--before", type=Path, nargs="*", default=[])
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--json")
    args = p.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    code = args.work / "heldout.txt"
    result = {"model": args.model, "reference": str(args.reference), "held_out": held_out_text(code), "rows": {}}
    out = args.work / "ort-int4"
    if not out.exists():
        start = time.perf_counter()
        cmd = [f"{BIN}/qwen-edge", "export", args.model, "-o", str(out), "--quantize", "int4", "-q"]
        subprocess.run(cmd, check=True)  # the first child: RUSAGE_CHILDREN's peak is its own
        result["export"] = {
            "command": " ".join(cmd[1:]),
            "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        }
    for name, folder in [("now", out), *((str(f), f) for f in args.before)]:
        row = {**sizes(folder), **resident(folder), **score(folder, args.reference, code, args.windows)}
        manifest = json.loads((folder / "manifest.json").read_text())
        row["recipe"] = manifest.get("recipe")
        result["rows"][name] = row
        w, c = row["wikitext2"], row["code"]
        print(
            f"{name}: weights {row['weights_bytes'] / 1e6:.1f} MB, folder {row['folder_bytes'] / 1e6:.1f} MB, "
            f"WikiText-2 {100 * w['perplexity_increase']:+.2f}% top-1 {w['top1_agreement']:.4f}, "
            f"code {100 * c['perplexity_increase']:+.2f}% top-1 {c['top1_agreement']:.4f}, "
            f"resident {row['resident_mb']:.0f} MB (peak {row['peak_mb']:.0f})",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
