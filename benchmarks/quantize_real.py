"""Quantization accuracy and size on the real Qwen2.5-Coder-0.5B-Instruct, ours against optimum-cli.

    .venv/bin/python benchmarks/quantize_real.py --text ../shared/data/wikitext-2-raw/wiki.test.raw \
        [--work /tmp/qreal] [--json benchmarks/quantize_real_0.5b.json]

1. our fp16 OpenVINO export of the fetched GGUF (the reference for every score),
2. `qwen-edge quantize` with int8, int4 (default: AWQ + scale estimation on the built-in
   calibration sample, never on the evaluation text) and int4 data-free,
3. optimum-cli's `--weight-format int4` (its default: asym g128, data-free) and fp16 on an HF
   folder written from the same weights,
4. `evaluate` for each against our fp16 folder: WikiText-2 perplexity over --windows windows of
   512 tokens, top-1 agreement, mean KL, generation similarity (32 greedy tokens after each of
   8 fixed prompts); and the size of each model's .bin.
Each step's wall time is recorded too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BIN = os.path.dirname(sys.executable)


def step(name: str, cmd: list[str], times: dict) -> None:
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    times[name] = time.perf_counter() - start
    print(f"{name}: {times[name]:.1f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, help="evaluation text (WikiText-2 test)")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--work", type=Path, default=Path("/tmp/qreal"))
    p.add_argument("--json")
    p.add_argument("--onnx", action="store_true", help="also the ort ONNX graph and its INT4 (MatMulNBits)")
    args = p.parse_args()

    from qwen_edge.quantize.evaluate import evaluate

    w, times = args.work, {}
    w.mkdir(parents=True, exist_ok=True)
    qe = f"{BIN}/qwen-edge"
    if not (w / "fp16").exists():
        step(
            "export fp16",
            [qe, "export", "qwen2.5-coder-0.5b-instruct", "-o", str(w / "fp16"), "--format", "openvino"],
            times,
        )
    ours = {
        "int8": ["--weights", "int8"],
        "int4": ["--weights", "int4"],  # the 0.5B row of DEFAULT_INT4: g32, ratio 0.8, data-free, INT4 table
        "int4 g128 data-free": ["--weights", "int4", "--group-size", "128", "--ratio", "1", "--data-free"],
        "int4 budget 5%": ["--weights", "int4", "--max-ppl-increase", "5%", "--eval-text", args.text],
    }
    for name, extra in ours.items():
        out = w / name.replace(" ", "-")
        if not out.exists():
            step(f"quantize {name}", [qe, "quantize", str(w / "fp16"), "-o", str(out), "--no-report", *extra], times)
    if not (w / "hf").exists():
        from int4_sweep import write_hf_folder  # benchmarks/ is on sys.path when run as a script

        write_hf_folder("qwen2.5-coder-0.5b-instruct", w / "hf", "float32")
    for name, fmt in (("optimum fp16", "fp16"), ("optimum int4", "int4")):
        out = w / name.replace(" ", "-")
        if not out.exists():
            cmd = [f"{BIN}/optimum-cli", "export", "openvino", "-m", str(w / "hf")]
            step(name, [*cmd, "--task", "text-generation-with-past", "--weight-format", fmt, str(out)], times)
    rows = {}
    names = ["optimum fp16", "int8", "int4", "int4 g128 data-free", "int4 budget 5%", "optimum int4"]
    if args.onnx:  # the ort graph in fp32, and NNCF's INT4 of it as MatMulNBits (scored against the fp32 graph)
        if not (w / "ort").exists():
            step("export ort fp32", [qe, "export", "qwen2.5-coder-0.5b-instruct", "-o", str(w / "ort")], times)
        if not (w / "ort-int4").exists():
            step("quantize ort int4", [qe, "quantize", str(w / "ort"), "-o", str(w / "ort-int4"), "--no-report"], times)
    for name in names + (["ort-int4"] if args.onnx else []):
        folder = w / name.replace(" ", "-")
        reference = w / ("ort" if name == "ort-int4" else "fp16")
        scores = evaluate(folder, reference=reference, text=args.text, windows=args.windows).to_dict()
        scores["model_bytes"] = (
            sum(f.stat().st_size for f in folder.glob("*.bin"))
            + sum(f.stat().st_size for f in folder.glob("model.onnx*"))
            - sum(f.stat().st_size for f in folder.glob("openvino_*tokenizer.bin"))
        )
        scores["folder_bytes"] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        rows[name] = scores
        print(
            f"{name:16s} ppl {scores['perplexity']:.3f} (fp16 {scores['reference_perplexity']:.3f}, "
            f"{100 * scores['perplexity_increase']:+.2f}%)  top-1 {scores['top1_agreement']:.4f}  "
            f"KL {scores['mean_kl']:.4f}  generation {scores['generation']['similarity']:.3f}  "
            f"{scores['model_bytes'] / 1e6:.0f} MB",
            flush=True,
        )
    fp16_bytes = (w / "fp16" / "openvino_model.bin").stat().st_size
    fp16_folder = sum(f.stat().st_size for f in (w / "fp16").iterdir() if f.is_file())
    print(f"fp16 (ours)      {fp16_bytes / 1e6:.0f} MB, folder {fp16_folder / 1e6:.0f} MB")
    for name, row in rows.items():
        print(f"{name:16s} folder {row['folder_bytes'] / 1e6:.0f} MB = {row['folder_bytes'] / fp16_folder:.3f}x fp16's")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"fp16_bytes": fp16_bytes, "fp16_folder_bytes": fp16_folder, "rows": rows, "times_s": times}, indent=2
            )
        )


if __name__ == "__main__":
    main()
