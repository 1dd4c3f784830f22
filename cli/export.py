"""Export MODEL to ONNX and / or OpenVINO IR (graph, config, tokenizer, manifest), written atomically.

MODEL: an HF folder, a GGUF file, a hub id, the known real model (qwen2.5-coder-0.5b-instruct)
or a shape name (Qwen2-0.5B, ...: random weights, for measurement). `--format all` loads the model
once and writes OUTPUT/onnx and OUTPUT/openvino. `--weights int4|int8|...` exports, then runs
`qwen-edge quantize` on the result; `--target mobile` is the phone bundle: the `ort` graph with
symmetric INT4 weights in blocks of 32 (MatMulNBits) and an INT4 embedding table
(GatherBlockQuantized), which onnxruntime-web, ONNX Runtime Mobile and onnxruntime-genai all run.
"""

from __future__ import annotations


def configure_parser(p) -> None:
    p.add_argument("model", help="HF folder, .gguf file, hub id, known model or shape name")
    p.add_argument("-o", "--output", required=True, help="folder to create")
    p.add_argument("--format", default="onnx", choices=["onnx", "openvino", "all"])
    p.add_argument(
        "--graph",
        default="ort",
        choices=["ort", "portable", "static"],
        help="ONNX graph. ort: ONNX Runtime fused ops + genai_config.json (default); portable: standard ops; "
        "static: NPU / mobile",
    )
    p.add_argument(
        "--max-prompt", type=int, default=None, help="static / NPU: tokens per prefill chunk (128; NPU 1024)"
    )
    p.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="static / NPU: KV cache slots; ort: genai max_length (1024; NPU 2048)",
    )
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="ONNX weights and compute")
    p.add_argument(
        "--weights",
        default="fp16",
        choices=["fp16", "fp32", "int8", "int4", "int4-mobile"],
        help="OpenVINO IR weights: fp16 / fp32; or a quantize preset, OpenVINO or ONNX ort (export, then qwen-edge "
        "quantize with its defaults and report)",
    )
    p.add_argument(
        "--target", choices=["mobile"], help="mobile: ONNX ort graph, INT4 (int4-mobile) — what the android_demo loads"
    )
    p.add_argument("--stateless", action="store_true", help="OpenVINO: explicit KV inputs / outputs, no state")
    p.add_argument(
        "--device-profile",
        choices=["npu"],
        help="OpenVINO: prepare for a device's rules. npu: static prefill + decode IRs, symmetric INT4, lint checked",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(
    model: str,
    output: str,
    format: str = "onnx",
    graph: str = "ort",
    max_prompt: int | None = None,
    max_context: int | None = None,
    dtype: str = "fp32",
    weights: str = "fp16",
    stateless: bool = False,
    device_profile: str | None = None,
    overwrite: bool = False,
    target: str | None = None,
) -> list[dict]:
    from pathlib import Path

    from qwen_edge.export.bundle import check_output
    from qwen_edge.export.npu_rules import NPU
    from qwen_edge.export.to_openvino import export_openvino
    from qwen_edge.models.loaders import load, source_paths
    from qwen_edge.models.shapes import SHAPES
    from qwen_edge.quantize.quantize import QuantizeError

    def export_onnx(*args, **kwargs):  # imported when used: the ONNX stack costs seconds to import
        from qwen_edge.export.to_onnx import export_onnx

        return export_onnx(*args, **kwargs)

    if target == "mobile":
        format, graph, weights, dtype = "onnx", "ort", "int4-mobile", "fp32"
    onnx = dict(graph=graph, max_prompt=max_prompt or 128, max_context=max_context or 1024, dtype=dtype)
    openvino = dict(weights=weights, stateless=stateless, device_profile=device_profile)
    if device_profile == "npu":
        openvino.update(max_prompt=max_prompt or NPU.max_prompt, max_context=max_context or NPU.max_context)
    onnx["overwrite"] = openvino["overwrite"] = overwrite
    quantized = weights not in ("fp16", "fp32")
    if quantized and (format == "all" or device_profile or (format == "onnx" and graph != "ort")):
        raise QuantizeError(
            f"--weights {weights} quantizes one OpenVINO export or one ONNX ort export (--device-profile npu "
            "always writes INT4): use --format openvino, or --format onnx --graph ort"
        )
    outputs = [output] if format != "all" else [Path(output) / "onnx", Path(output) / "openvino"]
    for out in outputs:  # before any work: a refused output should cost nothing
        check_output(out, overwrite, source_paths(model))
    if quantized and model in SHAPES:
        raise QuantizeError(
            f"{model} is random weights with no tokenizer, and --weights {weights} scores the result on text: "
            "export it without --weights (then qwen-edge quantize --no-report --data-free), or use a real model"
        )
    if quantized and format == "onnx":
        options = {**onnx, "dtype": "fp32"}
        return [_export_quantized(model, output, weights, options, export_onnx, ort_format=target == "mobile")]
    if quantized:
        return [_export_quantized(model, output, weights, openvino, export_openvino)]
    if format == "onnx":
        jobs = [(export_onnx, output, onnx)]
    elif format == "openvino":
        jobs = [(export_openvino, output, openvino)]
    else:
        jobs = [(export_onnx, Path(output) / "onnx", onnx), (export_openvino, Path(output) / "openvino", openvino)]
        model = load(model)  # once for both
    manifests = []
    for export, out, options in jobs:
        manifest = export(model, out, **options)
        total = sum(f["bytes"] for f in manifest["files"].values())
        kind = f"{manifest['format']} {manifest['graph']} graph"
        print(f"{out}: {kind}, {len(manifest['files'])} files, {total / 1e6:.1f} MB")
        manifests.append(manifest)
    return manifests


def _export_quantized(model, output, weights, options, export, ort_format: bool = False) -> dict:
    """Unquantized export into a hidden sibling, then quantize it into OUTPUT (atomic as both steps
    are). `ort_format`: also the ORT-format model for native ONNX Runtime Mobile, resealed in."""
    import shutil
    from pathlib import Path

    from qwen_edge.export import bundle
    from qwen_edge.models.loaders import source_paths
    from qwen_edge.quantize.quantize import quantize

    from .eval import print_scores

    out = bundle.check_output(output, options["overwrite"], source_paths(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle.remove_stale(out)
    tmp = bundle.sibling(out, "export")
    try:
        fresh = {**options, "overwrite": False} | ({"weights": "fp16"} if "weights" in options else {})
        export(model, Path(tmp) / "export", **fresh)
        if not ort_format:
            manifest = quantize(Path(tmp) / "export", out, weights=weights, overwrite=options["overwrite"])
        else:
            from qwen_edge.export.ort_mobile import write_ort_format

            manifest = quantize(Path(tmp) / "export", Path(tmp) / "quantized", weights=weights)
            with bundle.staged(out, options["overwrite"]) as staged:
                for f in (Path(tmp) / "quantized").iterdir():
                    if f.name != "manifest.json":
                        f.rename(staged / f.name)
                graph = manifest.get("runtime_file") or manifest["model_file"]
                files = write_ort_format(staged, graph, manifest["model_file"] + ".data")
                info = {k: v for k, v in manifest.items() if k not in ("files", "tools")}
                manifest = bundle.seal(
                    staged, {**info, "target": "mobile", "ort_format": {"folder": "ort_mobile", "files": files}}
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(f["bytes"] for f in manifest["files"].values())
    kind = f"{manifest['format']} {manifest['graph']} graph"
    print(f"{out}: {kind}, {weights}, {len(manifest['files'])} files, {total / 1e6:.1f} MB")
    print_scores(manifest["report"])
    return manifest
