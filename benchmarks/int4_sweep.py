"""The INT4 recipe search on a real model's fp16 OpenVINO export: compress with each recipe, score
it against the fp16 folder on WikiText-2 and on a held-out code text, record size, wall time and
peak memory of the compression.

    .venv/bin/python benchmarks/int4_sweep.py FP16_FOLDER WORK --rows ROWS.json [--json OUT.json]
        [--wiki ../shared/data/wikitext-2-raw/wiki.test.raw] [--calibration TEXT] [--generation 32]

ROWS.json: {"name": {Recipe field overrides on the `int4` preset}, ...}, e.g.
    {"g128 data-free": {"group_size": 128, "awq": false, "scale_estimation": false},
     "g64 r0.9 awq emb4": {"group_size": 64, "ratio": 0.9, "awq": true, "scale_estimation": false,
                           "embedding_mode": "int4_asym"}}
A row named "optimum:ARGS" is optimum-cli's export of --hf FOLDER with those extra arguments; one
named "builder:KEY=VALUE ..." is onnxruntime-genai's model builder (`-p int4 -e cpu`, those
`--extra_options`) on --hf FOLDER (give an fp32 one), scored against FP16_FOLDER = our fp32 `ort`
export (same graph interface, so our ONNX Runtime path runs it); a row
{"cli": [ARGS]} is `qwen-edge quantize FP16_FOLDER -o OUT --no-report ARGS` (how ONNX `ort` folders
are measured: FP16_FOLDER is then the fp32 `ort` export, the reference for the scores).

Each compression runs in a fresh process (`compress` below) so its wall time and peak RSS are its
own; the data-aware rows calibrate on the built-in sample (or --calibration), never on either
evaluation text. Held-out text: Python standard-library modules (heapq, textwrap, fractions) of
the interpreter running this, named with their sha256 in the JSON — code, what Qwen2.5-Coder is
for, and text no recipe was chosen on.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

BIN = os.path.dirname(sys.executable)
HELD_OUT = ("heapq.py", "textwrap.py", "fractions.py")


def held_out_text(out: Path) -> dict:
    lib = Path(sysconfig.get_paths()["stdlib"])
    text = "\n\n".join((lib / name).read_text() for name in HELD_OUT)
    out.write_text(text)
    return {"files": [str(lib / n) for n in HELD_OUT], "sha256": hashlib.sha256(text.encode()).hexdigest()}


def compress(src: Path, out: Path, overrides: dict, calibration_text: str | None) -> None:
    """One recipe, in this process: the IR written to `out` with the folder's other files."""
    import nncf
    import openvino as ov

    from qwen_edge.quantize import calibration
    from qwen_edge.quantize.recipes import compress_openvino, preset
    from qwen_edge.runtime.tokenizer import Tokenizer

    start = time.perf_counter()
    recipe = dataclasses.replace(preset("int4"), **overrides)
    dataset = None
    if recipe.data_aware:
        windows = calibration.windows(Tokenizer(src).encode(calibration.read_text(calibration_text)[0]), 32, 256)
        dataset = nncf.Dataset(calibration.openvino_items(windows))
    model = ov.Core().read_model(src / "openvino_model.xml")
    model, ran = compress_openvino(model, recipe, dataset)
    out.mkdir(parents=True)
    ov.save_model(model, str(out / "openvino_model.xml"), compress_to_fp16=True)
    peak = peak_rss()
    info = {"recipe": ran.to_dict(), "wall_s": time.perf_counter() - start, "peak_rss_bytes": peak}
    _copy_rest(src, out)
    info_path(out).write_text(json.dumps(info))


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which starts afresh at exec (getrusage's ru_maxrss
    carries over the forking parent's RSS, so a child of a big process would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _copy_rest(src: Path, out: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("openvino_model.") and f.name != "manifest.json":
            shutil.copy(f, out / f.name)
    from qwen_edge.export import bundle

    m = json.loads((src / "manifest.json").read_text())
    bundle.seal(out, {k: m[k] for k in ("format", "graph", "model_file", "config")})


def gnu_time(cmd: list[str]) -> dict:
    """Run `cmd` under GNU time from this process: its wall time and its own peak RSS (GNU time's
    child is forked from the small `time` process, so no parent's RSS is carried over)."""
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    if run.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{run.stderr[-2000:]}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_bytes": int(run.stderr.strip().splitlines()[-1]) * 1024}


def timed(cmd: list[str], out: Path, recipe: dict) -> None:
    """Run `cmd` under GNU time; its wall time and peak RSS beside OUT (info_path)."""
    info_path(out).write_text(json.dumps({"recipe": recipe, **gnu_time(cmd)}))


def info_path(out: Path) -> Path:
    """Beside the folder, not in it: a file in a sealed folder that its manifest does not list fails
    verification."""
    return out.with_name(out.name + ".sweep.json")


def optimum(hf: Path, out: Path, args: list[str]) -> None:
    cmd = [f"{BIN}/optimum-cli", "export", "openvino", "-m", str(hf), "--task", "text-generation-with-past"]
    timed([*cmd, "--weight-format", "int4", *args, str(out)], out, {"optimum": args})


def builder(hf: Path, reference: Path, out: Path, args: list[str]) -> None:
    """onnxruntime-genai's model builder (INT4, CPU) on the HF folder, timed; the folder it writes is
    then sealed with the reference `ort` export's manifest fields (same inputs, outputs and config:
    the two graphs have the same interface) so that `evaluate` runs it through our ONNX Runtime path."""
    from qwen_edge.export import bundle

    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", "Qwen/Qwen2.5-Coder", "-i", str(hf),
           "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(out.with_name(out.name + ".cache"))]  # fmt: skip
    timed([*cmd, *(["--extra_options", *args] if args else [])], out, {"builder": args})
    shutil.rmtree(out.with_name(out.name + ".cache"), ignore_errors=True)
    m = json.loads((reference / "manifest.json").read_text())
    info = {k: m[k] for k in ("format", "graph", "model_file", "config", "io")}
    bundle.seal(out, {**info, "precision": "int4", "source": {"kind": "onnxruntime-genai model builder", "args": args}})


def write_hf_folder(model: str, folder: Path, dtype: str = "float16") -> None:
    """MODEL's weights as our loader reads them, in `dtype` (float16: the same values as the fp16
    IR), as an HF folder for optimum-cli."""
    import torch
    from safetensors.torch import save_file

    from qwen_edge.models.loaders import load

    loaded = load(model, getattr(torch, dtype))
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(loaded.config.to_dict() | {"torch_dtype": dtype}))
    save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, tmp / "model.safetensors")
    for f in loaded.tokenizer_dir.iterdir():
        shutil.copyfile(f, tmp / f.name)
    tmp.rename(folder)


def model_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in [*folder.glob("openvino_model.*"), *folder.glob("model.onnx*")])


def _gb(value) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"


def markdown(paths: list[Path]) -> None:
    """One table row per measured recipe of the given result files."""
    print("| recipe | WikiText-2 ppl | vs reference | top-1 | generation | held-out code ppl | top-1 | weights | "
          "compress wall | peak RSS |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        for name, r in json.loads(path.read_text())["rows"].items():
            w, c = r["wikitext"], r["held_out"]
            gen = f"{w['generation']['similarity']:.3f}" if w["generation"] else "—"
            print(
                f"| {name} | {w['perplexity']:.3f} | {100 * w['perplexity_increase']:+.2f}% "
                f"| {w['top1_agreement']:.4f} "
                f"| {gen} | {c['perplexity']:.3f} ({100 * c['perplexity_increase']:+.2f}%) | {c['top1_agreement']:.4f} "
                f"| {r['model_bytes'] / 1e6:.0f} MB | {r['wall_s']:.0f} s | {_gb(r['peak_rss_bytes'])} |"
            )


def main() -> None:
    if sys.argv[1:2] == ["--markdown"]:
        markdown([Path(p) for p in sys.argv[2:]])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp16", type=Path)
    p.add_argument("work", type=Path)
    p.add_argument("--rows", type=Path, required=True)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--wiki", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/wikitext-2-raw/wiki.test.raw"
    )
    p.add_argument("--calibration")
    p.add_argument("--hf", type=Path, help="HF folder of the same weights, for optimum rows")
    p.add_argument("--hf-from", help="write --hf from this model (e.g. qwen2.5-coder-1.5b-instruct) if absent")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--generation", type=int, default=32)
    p.add_argument("--compress-one", nargs=2, metavar=("OUT", "OVERRIDES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.compress_one:
        compress(args.fp16, Path(args.compress_one[0]), json.loads(args.compress_one[1]), args.calibration)
        return

    from qwen_edge.quantize.evaluate import evaluate

    args.work.mkdir(parents=True, exist_ok=True)
    held = held_out_text(args.work / "held_out.py.txt")
    rows = json.loads(args.rows.read_text())
    results = json.loads(args.json.read_text()) if args.json and args.json.exists() else {"rows": {}}
    results |= {"fp16": str(args.fp16), "fp16_model_bytes": model_bytes(args.fp16), "held_out": held}
    continuations: dict = {}
    if args.hf and args.hf_from and not args.hf.exists():
        write_hf_folder(args.hf_from, args.hf)
    for name, overrides in rows.items():
        if name in results["rows"]:
            print(f"{name}: measured already", flush=True)
            continue
        out = args.work / name.replace(" ", "_").replace(":", "_").replace("/", "_")
        if not out.exists():
            if name.startswith("optimum:"):
                optimum(args.hf, out, name.split(":", 1)[1].split())
            elif name.startswith("builder:"):
                builder(args.hf, args.fp16, out, name.split(":", 1)[1].split())
            elif "cli" in overrides:
                cmd = [f"{BIN}/qwen-edge", "quantize", str(args.fp16), "-o", str(out), "--no-report"]
                timed([*cmd, *overrides["cli"]], out, {"cli": overrides["cli"]})
            else:
                cmd = [sys.executable, __file__, str(args.fp16), str(args.work), "--rows", str(args.rows)]
                cmd += ["--compress-one", str(out), json.dumps(overrides)]
                cmd += ["--calibration", args.calibration] if args.calibration else []
                subprocess.run(cmd, check=True)
        info = json.loads(info_path(out).read_text())
        wiki = evaluate(out, args.fp16, args.wiki, args.windows, generation_tokens=args.generation,
                        reference_continuations=continuations).to_dict()  # fmt: skip
        code = evaluate(out, args.fp16, args.work / "held_out.py.txt", args.windows, generation_tokens=0).to_dict()
        row = {**info, "model_bytes": model_bytes(out), "wikitext": wiki, "held_out": code}
        results["rows"][name] = row
        print(
            f"{name:28s} wiki {100 * wiki['perplexity_increase']:+6.2f}% top-1 {wiki['top1_agreement']:.4f} "
            f"gen {wiki['generation']['similarity'] if wiki['generation'] else float('nan'):.3f} | code "
            f"{100 * code['perplexity_increase']:+6.2f}% top-1 {code['top1_agreement']:.4f} | "
            f"{row['model_bytes'] / 1e6:.0f} MB {info['wall_s']:.0f} s {info['peak_rss_bytes'] / 1e9:.2f} GB",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
