"""Every target the CLI builds, as one library call: export, optionally quantize, optionally the
phone bundle, each output written atomically.

    build("model.gguf", "out")                                         # ONNX ort graph, fp32
    build("model.gguf", "out", format="openvino", quantize="int4")     # fp16 IR, then NNCF INT4
    build("model.gguf", "out", format="all", precision="fp16")        # out/onnx + out/openvino, one load
    build("model.gguf", "out", target="mobile")                        # the android_demo bundle

Two independent choices: `precision` is how unquantized weights are stored (fp32 or fp16; the
default is fp32 for ONNX, fp16 for OpenVINO) and `quantize` a `qwen-edge quantize` preset run on
the export (which is then made at the precision that preset starts from).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import bundle
from .bundle import OutputError

PRECISIONS = ("fp32", "fp16")
FORMATS = ("onnx", "openvino", "all")


class PipelineError(ValueError):
    """The asked combination of format, graph, precision and preset cannot be built."""


def build(
    model,
    output: str | Path,
    format: str = "onnx",
    graph: str = "ort",
    precision: str | None = None,
    quantize: str | None = None,
    target: str | None = None,
    stateless: bool = False,
    device_profile: str | None = None,
    max_prompt: int | None = None,
    max_context: int | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Build MODEL into `output`; the manifest of each folder written. Everything that can be
    checked before loading the model is checked first: a refused output or combination costs
    nothing."""
    from qwen_edge.models.loaders import load, source_paths
    from qwen_edge.models.shapes import SHAPES

    from .npu_rules import NPU

    if target == "mobile":
        format, graph, quantize, precision = "onnx", "ort", "int4-mobile", "fp32"
    _check(format, graph, precision, quantize, device_profile)
    outputs = [Path(output)] if format != "all" else [Path(output) / "onnx", Path(output) / "openvino"]
    for out in outputs:
        bundle.check_output(out, overwrite, source_paths(model))
    if quantize and isinstance(model, str) and model in SHAPES:
        raise PipelineError(
            f"{model} is random weights with no tokenizer, and quantizing scores the result on text: export it "
            "without a preset (then qwen-edge quantize --no-report --data-free), or use a real model"
        )
    onnx = dict(graph=graph, max_prompt=max_prompt or 128, max_context=max_context or 1024, overwrite=overwrite)
    onnx["dtype"] = "fp32" if quantize else precision or "fp32"  # NNCF's MatMulNBits start from fp32 weights
    openvino = dict(
        weights=precision or "fp16", stateless=stateless, device_profile=device_profile, overwrite=overwrite
    )
    if device_profile == "npu":
        openvino.update(max_prompt=max_prompt or NPU.max_prompt, max_context=max_context or NPU.max_context)
    if quantize:
        export, options = (_onnx, onnx) if format == "onnx" else (_openvino, {**openvino, "weights": "fp16"})
        return [_quantized(model, outputs[0], quantize, export, options, mobile=target == "mobile")]
    if format == "all":
        model = load(model)  # once for both
        return [_onnx(model, outputs[0], **onnx), _openvino(model, outputs[1], **openvino)]
    return [(_onnx if format == "onnx" else _openvino)(model, outputs[0], **(onnx if format == "onnx" else openvino))]


def _check(format, graph, precision, quantize, device_profile) -> None:
    if format not in FORMATS:
        raise PipelineError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if precision not in (None, *PRECISIONS):
        raise PipelineError(
            f"precision {precision!r} is a storage precision ({', '.join(PRECISIONS)}); quantize with a preset instead"
        )
    if quantize:
        from qwen_edge.quantize.recipes import preset

        preset(quantize)  # unknown names fail here
        if format == "all" or device_profile or (format == "onnx" and graph != "ort"):
            raise PipelineError(
                f"quantizing with {quantize} works on one OpenVINO export or one ONNX ort export (--device-profile "
                "npu always writes INT4): use --format openvino, or --format onnx --graph ort"
            )
        if precision and format == "onnx" and precision != "fp32":
            raise PipelineError(f"ONNX {quantize} is made from fp32 weights: leave out --precision {precision}")


def _onnx(model, out, **options) -> dict:
    from .to_onnx import export_onnx  # the ONNX stack costs seconds to import: only when used

    return export_onnx(model, out, **options)


def _openvino(model, out, **options) -> dict:
    from .to_openvino import export_openvino

    return export_openvino(model, out, **options)


def _quantized(model, out: Path, preset: str, export, options: dict, mobile: bool = False) -> dict:
    """Unquantized export into a hidden sibling, then quantize it into `out` (atomic as both steps
    are). `mobile`: also the ORT-format model for native ONNX Runtime Mobile, resealed in."""
    from qwen_edge.quantize.quantize import quantize

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle.remove_stale(out)
    tmp = bundle.sibling(out, "export")
    try:
        export(model, tmp / "export", **{**options, "overwrite": False})
        if not mobile:
            return quantize(tmp / "export", out, weights=preset, overwrite=options["overwrite"])
        from .ort_mobile import write_ort_format

        manifest = quantize(tmp / "export", tmp / "quantized", weights=preset)
        with bundle.staged(out, options["overwrite"]) as staged:
            for f in (tmp / "quantized").iterdir():
                if f.name != "manifest.json":
                    f.rename(staged / f.name)
            graph = manifest.get("runtime_file") or manifest["model_file"]
            files = write_ort_format(staged, graph, manifest["model_file"] + ".data")
            info = {k: v for k, v in manifest.items() if k not in ("files", "tools")}
            return bundle.seal(
                staged, {**info, "target": "mobile", "ort_format": {"folder": "ort_mobile", "files": files}}
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["build", "OutputError", "PipelineError", "PRECISIONS"]
