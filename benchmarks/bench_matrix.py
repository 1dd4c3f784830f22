"""Regenerate the `qwen-edge bench` matrix of benchmarks/RESULTS.md in one command.

    .venv/bin/python benchmarks/bench_matrix.py [--work /tmp/bench-matrix] [--runs 3]
        [--shapes Qwen2-0.5B,Qwen2-1.5B] [--no-real]

Folders, made once in --work (kept between runs):
- random weights at each shape + the Qwen2.5 tokenizer: our fp16 OpenVINO export quantized
  `--weights int4 --data-free` and `--weights int8`; our fp32 `ort` export quantized `--weights int4`
  (MatMulNBits; ONNX INT8 is not offered: NNCF writes DequantizeLinear + MatMul, ~30x slower);
- the real Qwen2.5-Coder-0.5B-Instruct: the same three (INT4 with AWQ on the built-in sample).
Then `qwen-edge bench` over all of them with --compare --bandwidth (prompt lengths 32, 128, 512,
1024; 32 new tokens), writing benchmarks/bench_matrix.json and benchmarks/bench_report/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = os.path.dirname(sys.executable)
QE = f"{BIN}/qwen-edge"


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def folders_for(source: str, work: Path, data_free: bool) -> list[Path]:
    ov16, ort32 = work / "ov-fp16", work / "ort-fp32"
    made = {"ov-int4": ov16, "ov-int8": ov16, "ort-int4": ort32}
    if not ov16.exists():
        run([QE, "export", source, "-o", str(ov16), "--format", "openvino"])
    if not ort32.exists():
        run([QE, "export", source, "-o", str(ort32), "--graph", "ort"])
    out = []
    for name, src in made.items():
        folder = work / name
        if not folder.exists():
            weights = name.split("-")[1]
            extra = ["--data-free"] if data_free and weights == "int4" and name.startswith("ov") else []
            run([QE, "quantize", str(src), "-o", str(folder), "--weights", weights, "--no-report", *extra])
        out.append(folder)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-matrix"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--shapes", default="Qwen2-0.5B,Qwen2-1.5B")
    p.add_argument("--no-real", action="store_true")
    p.add_argument("--prompt-lengths", default="32,128,512,1024")
    p.add_argument("--prepare-only", action="store_true", help="make the folders, do not measure")
    args = p.parse_args()

    sys.path.insert(0, str(HERE))
    from openvino_export_vs_optimum import SHARED_TOKENIZER, write_hf_folder

    folders = []
    for shape in [s for s in args.shapes.split(",") if s]:
        work = args.work / shape
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "ov-fp16").exists() or not (work / "ort-fp32").exists():
            if not (work / "hf").exists():
                write_hf_folder(shape, work / "hf", SHARED_TOKENIZER)
        folders += folders_for(str(work / "hf"), work, data_free=True)
        if (work / "hf").exists():  # random fp32 weights: only the exports need them
            import shutil

            shutil.rmtree(work / "hf")
    if not args.no_real:
        work = args.work / "qwen2.5-coder-0.5b-instruct"
        work.mkdir(parents=True, exist_ok=True)
        folders += folders_for("qwen2.5-coder-0.5b-instruct", work, data_free=False)
    if args.prepare_only:
        return
    run(
        [QE, "bench", *map(str, folders), "--compare", "--bandwidth", "--runs", str(args.runs),
         "--prompt-lengths", args.prompt_lengths, "--json", str(HERE / "bench_matrix.json"),
         "--report", str(HERE / "bench_report")]
    )  # fmt: skip


if __name__ == "__main__":
    main()
