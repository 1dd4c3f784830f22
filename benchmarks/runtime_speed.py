"""Our runtime against the runtimes users would pick instead, on the same INT4 folders, side by side.

    .venv/bin/python benchmarks/runtime_speed.py [--shape Qwen2-0.5B] [--runs 5] [--work /tmp/rtspeed]
        [--json benchmarks/runtime_speed_0.5b_int4.json]

Folders (made once in --work from random weights at the shape + the Qwen2.5 tokenizer):
`qwen-edge quantize --weights int4 --data-free` of our fp16 OpenVINO export, and of our fp32 `ort`
ONNX export (MatMulNBits). Runtimes:
    ours-openvino   qwen_edge.runtime.Engine on the OpenVINO folder
    llm-pipeline    openvino_genai.LLMPipeline on the same folder
    ours-ort        qwen_edge.runtime.Engine on the ONNX folder
    ort-genai       onnxruntime_genai on the same folder
Measured by `qwen-edge bench` (one harness: a fresh process per runtime and round, rounds
interleaved, warm-up excluded, prompts cut from real text at new offsets each round, greedy with
EOS ignored): medians of TTFT, decode tokens/s, peak RSS and load time; for ours also the share of
decode time spent outside the backend call (sampling, bookkeeping). Threads: each runtime's
default (all cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def prepare(shape: str, work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from openvino_export_vs_optimum import SHARED_TOKENIZER, write_hf_folder

    qe = f"{BIN}/qwen-edge"
    hf, folders = work / "hf", {"ov": work / "ov-int4", "ort": work / "ort-int4"}
    steps = [
        (hf, lambda: write_hf_folder(shape, hf, SHARED_TOKENIZER)),
        (work / "ov-fp16", [qe, "export", str(hf), "-o", str(work / "ov-fp16"), "--format", "openvino"]),
        (
            folders["ov"],
            [qe, "quantize", str(work / "ov-fp16"), "-o", str(folders["ov"]), "--data-free", "--no-report"],
        ),
        (work / "ort-fp32", [qe, "export", str(hf), "-o", str(work / "ort-fp32"), "--graph", "ort"]),
        (folders["ort"], [qe, "quantize", str(work / "ort-fp32"), "-o", str(folders["ort"]), "--no-report"]),
    ]
    work.mkdir(parents=True, exist_ok=True)
    for out, step in steps:
        if not out.exists():
            print(f"making {out}", flush=True)
            step() if callable(step) else subprocess.run(step, check=True)
    return folders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="Qwen2-0.5B")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--work", type=Path, default=Path("/tmp/rtspeed"))
    p.add_argument("--runtimes", default="ours,llm-pipeline,ort-genai")
    p.add_argument("--json")
    args = p.parse_args()

    from qwen_edge.cli.bench import run

    folders = prepare(args.shape, args.work)
    result = run(
        [str(folders["ov"]), str(folders["ort"])],
        prompt_lengths=str(args.prompt),
        new_tokens=str(args.new),
        runs=args.runs,
        compare=True,
        runtimes=args.runtimes,
        json_path=args.json,
    )
    for row in result["rows"]:
        if row["status"] == "ok" and row["runtime"] == "ours":
            share = row["by_prompt"][str(args.prompt)].get("overhead_share")
            print(f"ours on {Path(row['folder']).name}: {100 * share:.1f}% of decode time outside the backend call")
        for length, ratio in row.get("ours_vs_this", {}).items():
            print(
                f"ours / {row['runtime']} ({length} tokens): decode {ratio['decode']:.2f}x, TTFT {ratio['ttft']:.2f}x"
            )


if __name__ == "__main__":
    main()
