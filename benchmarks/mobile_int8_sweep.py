"""The phone bundle's accuracy with dynamic INT8 (MatMulInteger: the kernel onnxruntime-web's WASM
build runs fast) instead of INT4 MatMulNBits (no fast WASM path): per-channel weights, with and
without SmoothQuant-style activation smoothing folded into the weights, against the fp32 `ort` graph.

    .venv/bin/python benchmarks/mobile_int8_sweep.py --work /tmp/int8 --alphas 0,0.5,0.7 \
        --text ../shared/data/wikitext-2-raw/wiki.test.raw --json benchmarks/mobile_int8_sweep.json

For each alpha: the real Qwen2.5-Coder-0.5B (fp32) is smoothed (alpha 0: not at all), exported as
an fp32 `ort` folder, its MatMuls quantized by ONNX Runtime's `quantize_dynamic` (int8 weights per
output channel, activations per tensor at run time), its embedding stored as INT4
GatherBlockQuantized (as the INT4 bundle does), sealed, and scored with `qwen-edge eval` against the
fp32 folder (perplexity, top-1 agreement, on the same windows).

Smoothing (SmoothQuant, Xiao et al. 2023) moves activation outliers into the weights, where
per-channel quantization absorbs them: for a linear y = x W with input channel j, s_j =
max|x_j|^alpha / max|W_j|^(1 - alpha); the preceding op divides channel j by s_j and W's input
row j is multiplied by it. Folded exactly: into the RMSNorm weights (q/k/v, gate/up), into v_proj's
output rows (o_proj; the 7 query heads sharing a KV head share its scales) and into up_proj's output
rows (down_proj). Activation maxima come from the built-in calibration text, never the eval text.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

from qwen_edge.quantize.onnx_int8 import _stored_smaller
from qwen_edge.quantize.smoothing import activation_maxima, smooth, smooth_head


def int8_folder(fp32: Path, out: Path, exclude: tuple[str, ...] = (), storage: str = "fp32") -> dict:
    """`fp32` (an ort folder) with its MatMuls as dynamic INT8 and its embedding as INT4, sealed."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from qwen_edge.export import bundle
    from qwen_edge.export.ort_graph import IR_VERSION, write_last_logits
    from qwen_edge.quantize.onnx_weights import _quantize_embedding_gathers

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = json.loads((fp32 / "manifest.json").read_text())
    for name in manifest["files"]:
        if not name.startswith("model"):
            shutil.copyfile(fp32 / name, out / name)
    tmp = out / ".q.onnx"
    quantize_dynamic(
        str(fp32 / "model.onnx"),
        str(tmp),
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        use_external_data_format=True,
        nodes_to_exclude=list(exclude),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )  # contrib ops defeat its shape inference; fmt: skip
    model = onnx.load(str(tmp))
    _quantize_embedding_gathers(model, symmetric=True)
    if storage != "fp32":
        _stored_smaller(model, set(exclude), storage)
    model.ir_version = IR_VERSION
    onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    for f in out.glob(".q.onnx*"):
        f.unlink()
    write_last_logits(out / "model.onnx")
    info = {k: v for k, v in manifest.items() if k not in ("files", "tools")}
    return bundle.seal(out, {**info, "precision": "int8-dynamic"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/int8"))
    ap.add_argument("--alphas", default="0,0.5")
    ap.add_argument("--text", help="evaluation text (WikiText-2 test)")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument(
        "--head",
        default="int8",
        choices=["int8", "smooth", "fp32"],
        help="lm_head: int8 as the rest, int8 after smoothing the final norm into it, or left fp32",
    )
    ap.add_argument("--alpha-down", type=float, help="a stronger alpha for down_proj (its inputs carry the outliers)")
    ap.add_argument("--keep-fp32", default="", help="a substring of MatMul node names left fp32 (a sensitivity probe)")
    ap.add_argument(
        "--kept-storage",
        default="fp32",
        choices=["fp32", "fp16", "int8"],
        help="how the --keep-fp32 weights are stored (computed fp32 either way: ORT folds the rebuild at load)",
    )
    ap.add_argument("--json")
    args = ap.parse_args()

    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.loaders import load
    from qwen_edge.quantize import calibration
    from qwen_edge.quantize.evaluate import evaluate
    from qwen_edge.runtime.tokenizer import Tokenizer

    real = load("qwen2.5-coder-0.5b-instruct")
    fp32 = args.work / "fp32"
    if not (fp32 / "manifest.json").exists():
        export_onnx(real, fp32)
    text, _ = calibration.read_text(None)
    windows = calibration.windows(Tokenizer(real.tokenizer_dir).encode(text), 8, 256)
    maxima = activation_maxima(real.model, windows)
    rows = []
    for alpha in [float(a) for a in args.alphas.split(",")]:
        smoothed = copy.deepcopy(real)
        if alpha > 0:
            smooth(smoothed.model, maxima, alpha, args.alpha_down)
            if args.head == "smooth":
                smooth_head(smoothed.model, maxima, alpha)
        tag = f"{alpha:g}" + ("-head" if args.head == "smooth" and alpha > 0 else "")
        tag += f"-down{args.alpha_down:g}" if args.alpha_down else ""
        source = args.work / f"fp32-smooth-{tag}"
        export_onnx(smoothed, source, overwrite=True) if not (source / "manifest.json").exists() else None
        del smoothed
        folder = args.work / f"int8-smooth-{tag}-head-{args.head}"
        exclude = ["/lm_head/MatMul"] if args.head == "fp32" else []
        if args.keep_fp32:
            import onnx

            graph = onnx.load(str(source / "model.onnx"), load_external_data=False).graph
            exclude += [n.name for n in graph.node if n.op_type == "MatMul" and args.keep_fp32 in n.name]
            kept = args.kept_storage
            folder = folder.with_name(f"{folder.name}-{kept}-{args.keep_fp32.strip('/').replace('/', '_')}")
        manifest = int8_folder(source, folder, tuple(exclude), args.kept_storage)
        scores = evaluate(folder, fp32, args.text, args.windows, generation_tokens=0).to_dict()
        size = sum(f["bytes"] for n, f in manifest["files"].items() if n.startswith("model.onnx"))
        kept = ("perplexity", "reference_perplexity", "perplexity_increase", "top1_agreement", "mean_kl")
        row = {
            "alpha": alpha,
            "alpha_down": args.alpha_down,
            "head": args.head,
            "fp32": args.keep_fp32,
            "kept_storage": args.kept_storage,
            "model_bytes": size,
            **{k: scores[k] for k in kept},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
