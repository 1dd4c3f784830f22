"""Export MODEL to ONNX and / or OpenVINO IR (graph, config, tokenizer, manifest), written atomically.

MODEL: an HF folder, a GGUF file, a hub id, the known real model (qwen2.5-coder-0.5b-instruct)
or a shape name (Qwen2-0.5B, ...: random weights, for measurement). `--format all` loads the model
once and writes OUTPUT/onnx and OUTPUT/openvino. `--precision fp32|fp16` is how weights are stored;
`--quantize int4|int8|...` exports, then runs `qwen-edge quantize` on the result; `--target mobile` is
the phone bundle: the `ort` graph smoothed and quantized to dynamic INT8 (MatMulInteger; down_proj
fp16-stored) with an INT4 embedding table (GatherBlockQuantized), which onnxruntime-web, ONNX
Runtime Mobile and onnxruntime-genai run. The library call behind it: qwen_edge.quantize.pipeline.build.
"""

from __future__ import annotations

PRESETS = ("int8", "int4", "int4-mobile", "int4-npu")


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
        help="the longest prompt + reply the folder serves, in our runtime and onnxruntime-genai alike "
        "(static / NPU: its KV slots, 1024 / 2048; ort: 4096, onnxruntime-genai preallocates it; "
        "dynamic graphs: the model's positions)",
    )
    p.add_argument(
        "--precision", choices=["fp32", "fp16"], help="how weights are stored (default: ONNX fp32, OpenVINO fp16)"
    )
    p.add_argument("--quantize", choices=PRESETS, help="a quantize preset, run on the export (OpenVINO, or ONNX ort)")
    p.add_argument(
        "--weights",
        choices=["fp16", "fp32", *PRESETS],
        help="shorthand: fp16 / fp32 set --precision, a preset sets --quantize",
    )
    p.add_argument("--dtype", choices=["fp32", "fp16"], help="the same as --precision (older name)")
    p.add_argument(
        "--target",
        choices=["mobile"],
        help="mobile: the phone bundle — ONNX ort graph, smoothed dynamic INT8 (down_proj fp16), .ort copy",
    )
    p.add_argument("--stateless", action="store_true", help="OpenVINO: explicit KV inputs / outputs, no state")
    p.add_argument(
        "--device-profile",
        choices=["npu"],
        help="OpenVINO: prepare for a device's rules. npu: static prefill + decode IRs, symmetric INT4, lint checked",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="with --quantize: score the result against the unquantized export (perplexity, top-1; costs the "
        "reference's memory, ~2x the fp16 model)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="take the tokenizer from here (a folder with tokenizer.json, a .gguf, or a known model); a shape "
        "name gets the real Qwen2.5 tokenizer by default",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(
    model: str,
    output: str,
    format: str = "onnx",
    graph: str = "ort",
    max_prompt: int | None = None,
    max_context: int | None = None,
    precision: str | None = None,
    quantize: str | None = None,
    weights: str | None = None,
    dtype: str | None = None,
    stateless: bool = False,
    device_profile: str | None = None,
    overwrite: bool = False,
    target: str | None = None,
    report: bool = False,
    tokenizer: str | None = None,
) -> list[dict]:
    from qwen_edge.quantize.pipeline import PipelineError, build

    from .eval import print_scores

    asked = {name: value for name, value in (("--precision", precision), ("--dtype", dtype)) if value}
    if weights in ("fp16", "fp32"):
        asked["--weights"] = weights
    if len(set(asked.values())) > 1:
        raise PipelineError(f"{' and '.join(f'{k} {v}' for k, v in asked.items())} disagree: give one precision")
    precision = next(iter(asked.values()), None)
    if weights and weights not in ("fp16", "fp32"):
        if quantize and quantize != weights:
            raise PipelineError(f"--weights {weights} and --quantize {quantize} disagree: give one preset")
        quantize = weights
    if report and not quantize:
        raise PipelineError("--report scores a quantized export against the unquantized one: add --quantize PRESET")
    manifests = build(
        model, output, format, graph, precision, quantize, target, stateless, device_profile, max_prompt,
        max_context, overwrite, report, tokenizer,
    )  # fmt: skip
    for manifest in manifests:
        total = sum(f["bytes"] for f in manifest["files"].values())
        kind = f"{manifest['format']} {manifest['graph']} graph, {manifest.get('precision')}"
        where = output if len(manifests) == 1 else f"{output}/{manifest['format']}"
        print(f"{where}: {kind}, {len(manifest['files'])} files, {total / 1e6:.1f} MB")
        if manifest.get("report"):
            print_scores(manifest["report"])
    return manifests
