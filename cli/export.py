"""Export MODEL to an ONNX folder (graph, config, tokenizer, manifest), written atomically.

MODEL: an HF folder, a GGUF file, a hub id, the known real model (qwen2.5-coder-0.5b-instruct)
or a shape name (Qwen2-0.5B, ...: random weights, for measurement).
"""

from __future__ import annotations


def configure_parser(p) -> None:
    p.add_argument("model", help="HF folder, .gguf file, hub id, known model or shape name")
    p.add_argument("-o", "--output", required=True, help="folder to create")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument(
        "--graph",
        default="ort",
        choices=["ort", "portable", "static"],
        help="ort: ONNX Runtime fused ops + genai_config.json (default); portable: standard ops; static: NPU / mobile",
    )
    p.add_argument("--max-prompt", type=int, default=128, help="static graph: tokens per prefill chunk")
    p.add_argument("--max-context", type=int, default=1024, help="static: KV cache slots; ort: genai max_length")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(model: str, output: str, format: str = "onnx", **options) -> dict:
    from qwen_edge.export.to_onnx import export_onnx

    exporters = {"onnx": export_onnx}
    manifest = exporters[format](model, output, **options)
    total = sum(f["bytes"] for f in manifest["files"].values())
    kind = f"{manifest['format']} {manifest['graph']} graph"
    print(f"{output}: {kind}, {len(manifest['files'])} files, {total / 1e6:.1f} MB")
    return manifest
