"""Export MODEL to ONNX and / or OpenVINO IR (graph, config, tokenizer, manifest), written atomically.

MODEL: an HF folder, a GGUF file, a hub id, the known real model (qwen2.5-coder-0.5b-instruct)
or a shape name (Qwen2-0.5B, ...: random weights, for measurement). `--format all` loads the model
once and writes OUTPUT/onnx and OUTPUT/openvino.
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
    p.add_argument("--weights", default="fp16", choices=["fp16", "fp32"], help="OpenVINO IR weight storage")
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
) -> list[dict]:
    from pathlib import Path

    from qwen_edge.export.npu_rules import NPU
    from qwen_edge.export.to_openvino import export_openvino
    from qwen_edge.models.loaders import load

    def export_onnx(*args, **kwargs):  # imported when used: the ONNX stack costs seconds to import
        from qwen_edge.export.to_onnx import export_onnx

        return export_onnx(*args, **kwargs)

    onnx = dict(graph=graph, max_prompt=max_prompt or 128, max_context=max_context or 1024, dtype=dtype)
    openvino = dict(weights=weights, stateless=stateless, device_profile=device_profile)
    if device_profile == "npu":
        openvino.update(max_prompt=max_prompt or NPU.max_prompt, max_context=max_context or NPU.max_context)
    onnx["overwrite"] = openvino["overwrite"] = overwrite
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
