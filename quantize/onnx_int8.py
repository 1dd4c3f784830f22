"""Dynamic INT8 for the phone: an fp32 `ort` graph's MatMuls as ONNX Runtime's MatMulInteger.

onnxruntime-web's WASM build runs int8 GEMM fast and INT4 MatMulNBits slowly (0.99 against 11.3
tokens/s, real 0.5B, 2 threads; benchmarks/RESULTS.md), so the phone bundle is INT8: weights int8
per output channel, activations quantized per tensor at run time (`quantize_dynamic`), after
smoothing (quantize/smoothing.py). MatMuls whose names contain a `keep` part (down_proj: its
inputs keep outliers smoothing cannot fix) compute in fp32 on fp32 activations; their weights are
stored smaller (`kept_storage`): "int8" per output channel behind Cast and Mul by the scales, or
"fp16" behind a Cast. ONNX Runtime folds either into fp32 weights when the session loads, so the
stored form changes the download, not the arithmetic. The embedding table becomes INT4
GatherBlockQuantized, as in the INT4 bundle.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP = ("down_proj",)
KEPT_STORAGE = ("int8", "fp16")


def int8_dynamic(source: Path, out: Path, keep: tuple[str, ...] = KEEP, kept_storage: str = "int8") -> list[str]:
    """Write out/model.onnx (+ .data, + the last-logits graph) from source's fp32 ort graph, and
    copy source's other files; the MatMuls kept out of INT8, by name."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from qwen_edge.export.ort_graph import IR_VERSION, write_last_logits

    from .onnx_weights import _quantize_embedding_gathers

    graph = onnx.load(str(source / "model.onnx"), load_external_data=False).graph
    kept = [n.name for n in graph.node if n.op_type == "MatMul" and any(k in n.name for k in keep)]
    staging = out / ".int8"
    staging.mkdir()
    quiet = _NoAdvice()
    logging.getLogger().addFilter(quiet)  # its advice to pre-process is logged to the root logger, at the user
    try:
        quantize_dynamic(
            str(source / "model.onnx"),
            str(staging / "model.onnx"),
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=True,
            nodes_to_exclude=kept,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # contrib ops defeat its shape inference
        )
    finally:
        logging.getLogger().removeFilter(quiet)
    model = onnx.load(str(staging / "model.onnx"))
    shutil.rmtree(staging)
    gathers = _quantize_embedding_gathers(model, symmetric=True)
    _stored_smaller(model, set(kept), kept_storage)
    model.ir_version = IR_VERSION
    onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    write_last_logits(out / "model.onnx")
    for f in source.iterdir():
        if f.is_file() and not f.name.startswith("model") and f.name != "manifest.json":
            shutil.copyfile(f, out / f.name)
    integer = sum(n.op_type == "MatMulInteger" for n in model.graph.node)
    log.info("ONNX INT8: %d MatMulInteger, %d MatMuls computed fp32, stored %s (%s), %d GatherBlockQuantized",
             integer, len(kept), kept_storage, ", ".join(keep), gathers)  # fmt: skip
    return kept


class _NoAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _stored_smaller(model, names: set[str], storage: str) -> None:
    """Replace each named MatMul's fp32 weight initializer by a constant subgraph that rebuilds it:
    Cast(fp16) or Mul(Cast(int8), scale per output column)."""
    from onnx import helper, numpy_helper  # Cast to=1: float

    if storage not in KEPT_STORAGE:
        raise ValueError(f"kept_storage must be one of {', '.join(KEPT_STORAGE)}, not {storage!r}")
    inits = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.name in names and n.input[1] in inits]:
        t = inits[node.input[1]]
        weight = numpy_helper.to_array(t)
        model.graph.initializer.remove(t)
        at = list(model.graph.node).index(node)
        if storage == "fp16":
            stored = numpy_helper.from_array(weight.astype(np.float16), t.name + "_fp16")
            nodes = [helper.make_node("Cast", [stored.name], [t.name], name=f"{node.name}/Cast", to=1)]
            extra = []
        else:
            scale = np.maximum(np.abs(weight).max(axis=0, keepdims=True), 1e-12) / 127.0  # weight is [in, out]
            stored = numpy_helper.from_array(np.round(weight / scale).astype(np.int8), t.name + "_int8")
            extra = [numpy_helper.from_array(scale.astype(np.float32), t.name + "_scale")]
            cast = helper.make_node("Cast", [stored.name], [t.name + "_f"], name=f"{node.name}/Cast", to=1)
            nodes = [cast, helper.make_node("Mul", [t.name + "_f", extra[0].name], [t.name], name=f"{node.name}/Scale")]
        model.graph.initializer.extend([stored, *extra])
        for i, n in enumerate(nodes):
            model.graph.node.insert(at + i, n)
