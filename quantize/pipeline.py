"""Every target the CLI builds, as one library call: export, optionally quantize, optionally the
phone bundle, each output written atomically. It lives in quantize because it uses both packages and
export never imports quantize (the layering: models -> runtime -> export -> quantize -> cli).

    build("model.gguf", "out")                                         # ONNX ort graph, fp32
    build("model.gguf", "out", format="openvino", quantize="int4")     # fp16 IR, then NNCF INT4
    build("model.gguf", "out", format="all", precision="fp16")        # out/onnx + out/openvino, one load
    build("model.gguf", "out", target="mobile")                        # the android_demo bundle

Two independent choices: `precision` is how unquantized weights are stored (fp32 or fp16; the
default is fp32 for ONNX, fp16 for OpenVINO) and `quantize` a `qwen-edge quantize` preset run on
the export (which is then made at the precision that preset starts from).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from qwen_edge.export import bundle
from qwen_edge.export.bundle import OutputError

PRECISIONS = ("fp32", "fp16")
FORMATS = ("onnx", "openvino", "all")
log = logging.getLogger(__name__)

WEBGPU = "webgpu"  # the phone bundle's subfolder for browsers with WebGPU (android_demo picks one)


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
    report: bool = False,
    tokenizer: str | None = None,
) -> list[dict]:
    """Build MODEL into `output`; the manifest of each folder written. Everything that can be
    checked before loading the model is checked first: a refused output or combination costs
    nothing. `report`: score a quantized export against the unquantized one (`qwen-edge quantize`'s
    report; off by default here, as the reference costs more memory than the export: ~6.5 GB for a
    1.5B fp16 IR compiled for f32). `tokenizer`: where the tokenizer comes from instead of MODEL
    (qwen_edge.models.loaders.tokenizer_folder)."""
    import torch

    from qwen_edge.export.npu_rules import NPU
    from qwen_edge.models.loaders import QWEN25_TOKENS, Loaded, load, source_paths
    from qwen_edge.models.shapes import SHAPES

    if target not in (None, "mobile"):
        raise PipelineError(f"unknown target {target!r}; the one target is mobile")
    if target == "mobile":
        format, graph, precision = "onnx", "ort", "fp32"
    _check(format, graph, precision, quantize, device_profile)
    for flag, value in (("--max-prompt", max_prompt), ("--max-context", max_context)):
        if value is not None and value < 1:
            raise PipelineError(f"{flag} {value}: give a number of tokens, 1 or more")
    outputs = [Path(output)] if format != "all" else [Path(output) / "onnx", Path(output) / "openvino"]
    for out in outputs:
        bundle.check_output(out, overwrite, source_paths(model))
    if (quantize or target) and not tokenizer and isinstance(model, str) and model in SHAPES:
        if SHAPES[model]["vocab_size"] < QWEN25_TOKENS:  # the test shapes: no real tokenizer fits
            raise PipelineError(
                f"{model} is random weights with no tokenizer, and {'the phone bundle' if target else 'quantizing'}"
                " calibrates and scores on text: export it without a preset (then qwen-edge quantize --no-report "
                "--data-free), or use a real model"
            )
    onnx = dict(graph=graph, max_prompt=max_prompt or 128, max_context=max_context, overwrite=overwrite)
    onnx["dtype"] = "fp32" if quantize else precision or "fp32"  # NNCF's MatMulNBits start from fp32 weights
    openvino = dict(
        weights=precision or "fp16", stateless=stateless, device_profile=device_profile, overwrite=overwrite
    )
    if device_profile == "npu":
        openvino.update(max_prompt=max_prompt or NPU.max_prompt, max_context=max_context or NPU.max_context)
    elif max_context:
        openvino.update(max_context=max_context)
    if quantize:
        export, options = (_onnx, onnx) if format == "onnx" else (_openvino, {**openvino, "weights": "fp16"})
        lazy = None if isinstance(model, Loaded) else _lazy(model, quantize, format, tokenizer)
        if lazy is not None:  # compressed weight by weight as the graph is built: never the whole model
            return [_streamed(*lazy, outputs[0], quantize, format, export, options, report)]
    if tokenizer is not None and not isinstance(model, Loaded):  # loaded once, with that tokenizer
        fp16 = format == "openvino" and (precision or "fp16") == "fp16"
        model = load(model, torch.float16 if fp16 else torch.float32, tokenizer=tokenizer)
    if target == "mobile":
        return [_mobile(model, outputs[0], overwrite)]
    if quantize:
        return [_quantized(model, outputs[0], quantize, export, options, report)]
    if format == "all":
        model = model if isinstance(model, Loaded) else load(model)  # once for both
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
        from .recipes import preset

        preset(quantize)  # unknown names fail here
        if format == "all" or device_profile or (format == "onnx" and graph != "ort"):
            raise PipelineError(
                f"quantizing with {quantize} works on one OpenVINO export or one ONNX ort export (--device-profile "
                "npu always writes INT4): use --format openvino, or --format onnx --graph ort"
            )
        if precision and format == "onnx" and precision != "fp32":
            raise PipelineError(f"ONNX {quantize} is made from fp32 weights: leave out --precision {precision}")


def _onnx(model, out, **options) -> dict:
    from qwen_edge.export.to_onnx import export_onnx  # the ONNX stack costs seconds to import: only when used

    return export_onnx(model, out, **options)


def _openvino(model, out, **options) -> dict:
    from qwen_edge.export.to_openvino import export_openvino

    from .recipes import compress_npu

    return export_openvino(model, out, **options, compress=compress_npu if options.get("device_profile") else None)


def _mobile(model, out: Path, overwrite: bool) -> dict:
    """The phone bundle (android_demo/, native ORT Mobile, onnxruntime-genai): the model smoothed
    (quantize/smoothing.py), exported as an fp32 `ort` graph, its MatMuls dynamic INT8 but
    down_proj (computed fp32, stored int8 per channel), embedding INT4 (quantize/onnx_int8.py);
    scored against the smoothed fp32 graph (the same function) on the built-in text; plus the
    ORT-format copy, and in webgpu/ an INT4 `ort` export of the unsmoothed model (the app's
    WebGPU path: onnxruntime-web has no WebGPU MatMulInteger). A `model` given already loaded is
    smoothed in place."""
    from qwen_edge.export.ort_mobile import write_ort_format
    from qwen_edge.models.loaders import Loaded, load
    from qwen_edge.runtime.tokenizer import Tokenizer

    from . import calibration, smoothing
    from .evaluate import evaluate
    from .onnx_int8 import int8_dynamic
    from .quantize import quantize

    loaded = model if isinstance(model, Loaded) else load(model)
    if loaded.tokenizer_dir is None:
        raise PipelineError("this model has no tokenizer: the phone bundle is calibrated and scored on text")
    with bundle.scratch(out.resolve()) as tmp:
        # The WebGPU copy first, from the weights before smoothing (smoothing serves dynamic INT8
        # activations; weight-only INT4 does not need it): the desktop INT4 `ort` recipe, whose
        # MatMulNBits and GroupQueryAttention onnxruntime-web's WebGPU build runs.
        _onnx(loaded, tmp / "plain", graph="ort", dtype="fp32", overwrite=False)
        # a symmetric table: onnxruntime-web's WebGPU GatherBlockQuantized refuses packed zero points
        webgpu = quantize(tmp / "plain", tmp / WEBGPU, weights="int4", report=True, embedding_mode="int4_sym")
        shutil.rmtree(tmp / "plain")
        text, source = calibration.read_text(None)
        windows = calibration.windows(Tokenizer(loaded.tokenizer_dir).encode(text), 8, 256)
        maxima = smoothing.activation_maxima(loaded.model, windows)
        smoothing.smooth(loaded.model, maxima)
        smoothing.smooth_head(loaded.model, maxima)
        fp32 = _onnx(loaded, tmp / "fp32", graph="ort", dtype="fp32", overwrite=False)
        with bundle.staged(out, overwrite) as staged:
            shutil.copytree(tmp / WEBGPU, staged / WEBGPU)
            kept = int8_dynamic(tmp / "fp32", staged)
            recipe = {"name": "int8-mobile", "smoothing_alpha": smoothing.ALPHA, "kept_storage": "int8",
                      "kept_fp32_compute": len(kept),
                      "calibration": calibration.describe(text, source, windows)}  # fmt: skip
            info = {k: v for k, v in fp32.items() if k not in ("files", "tools")}
            info |= {"precision": "int8-mobile", "target": "mobile", "recipe": recipe}
            bundle.seal(staged, info)  # evaluation reads a sealed folder
            scores = evaluate(staged, tmp / "fp32").to_dict()
            (staged / "report.json").write_text(json.dumps(scores, indent=2) + "\n")
            files = write_ort_format(staged, fp32["runtime_file"], "model.onnx.data")
            gpu = {"folder": WEBGPU, "precision": webgpu["precision"], "runtime_file": webgpu["runtime_file"],
                   "recipe": webgpu["recipe"], "report": webgpu["report"]}  # fmt: skip
            return bundle.seal(
                staged,
                {**info, "report": scores, "ort_format": {"folder": "ort_mobile", "files": files}, "webgpu": gpu},
            )


def _lazy(model: str, preset: str, format: str, tokenizer: str | None):
    """(MODEL opened tensor by tensor, the recipe) when `preset` can be applied weight by weight
    while exporting (quantize/streamed.py); None when the model must be exported whole first."""
    import torch

    from qwen_edge.models.lazy import LazyError
    from qwen_edge.models.loaders import open_lazy

    from . import streamed
    from .recipes import default_recipe

    if format not in ("onnx", "openvino"):
        return None
    try:
        loaded = open_lazy(model, torch.float16 if format == "openvino" else torch.float32, tokenizer)
    except LazyError as e:
        log.info("quantizing a whole export: %s", e)
        return None
    recipe = default_recipe(preset, loaded.config.hidden_size, loaded.config.num_hidden_layers)
    reason = streamed.why_not(recipe, loaded.config)
    if reason:
        log.info("quantizing a whole export: %s", reason)
        return None
    return loaded, recipe


def _streamed(loaded, recipe, out: Path, preset: str, format: str, export, options: dict, report: bool) -> dict:
    """Export with each weight compressed as it is written; with `report`, scored against the
    float export of the same model (written to a scratch folder) before the folder is placed."""
    from qwen_edge.models.loaders import source_paths

    from . import streamed
    from .evaluate import evaluate
    from .quantize import REPORT

    plan = streamed.plan(recipe, loaded.config, loaded.model.weights, format)
    recipe = {"name": preset, **plan.recipe.to_dict(), "calibration": None}
    options = {**options, "quantizer": streamed.quantizer(plan), "recipe": recipe}
    if not report:
        return export(loaded, out, **options)
    with bundle.scratch(out.resolve()) as tmp:
        export(loaded, tmp / "quantized", **{**options, "overwrite": False})
        export(loaded, tmp / "reference", **{**options, "overwrite": False, "quantizer": None, "recipe": None})
        scores = evaluate(tmp / "quantized", tmp / "reference").to_dict()
        shutil.rmtree(tmp / "reference")
        with bundle.staged(out, options["overwrite"], source_paths(loaded)) as staged:
            for f in (tmp / "quantized").iterdir():
                f.rename(staged / f.name)
            (staged / REPORT).write_text(json.dumps(scores, indent=2) + "\n")
            info = json.loads((staged / bundle.MANIFEST).read_text())
            info = {k: v for k, v in info.items() if k not in ("files", "tools")}
            return bundle.seal(staged, {**info, "report": scores})


def _quantized(model, out: Path, preset: str, export, options: dict, report: bool) -> dict:
    """Unquantized export into a hidden sibling, then quantize it into `out` (atomic as both steps are)."""
    from .quantize import quantize

    with bundle.scratch(out.resolve()) as tmp:
        export(model, tmp / "export", **{**options, "overwrite": False})
        return quantize(tmp / "export", out, weights=preset, overwrite=options["overwrite"], report=report)


__all__ = ["build", "OutputError", "PipelineError", "PRECISIONS"]
