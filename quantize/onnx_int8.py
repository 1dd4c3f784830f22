"""Dynamic INT8 for the phone: an fp32 `ort` graph's MatMuls as ONNX Runtime's MatMulInteger.

onnxruntime-web's WASM build runs int8 GEMM fast and INT4 MatMulNBits slowly (0.99 against 11.3
tokens/s, real 0.5B, 2 threads; benchmarks/RESULTS.md), so the phone bundle is INT8: weights int8
per output channel, activations quantized per tensor at run time (`quantize_dynamic`), after
smoothing (quantize/smoothing.py). MatMuls whose names contain a `keep` part (down_proj: its
inputs keep outliers smoothing cannot fix) stay out of INT8 and are stored fp16 behind a Cast
(half the download; ONNX Runtime folds the Cast at load and computes them in fp32). The embedding
table becomes INT4 GatherBlockQuantized, as in the INT4 bundle.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP = ("down_proj",)


def int8_dynamic(source: Path, out: Path, keep: tuple[str, ...] = KEEP) -> list[str]:
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
    model = onnx.load(str(staging / "model.onnx"))
    shutil.rmtree(staging)
    gathers = _quantize_embedding_gathers(model)
    _fp16_storage(model, set(kept))
    model.ir_version = IR_VERSION
    onnx.save(model, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    write_last_logits(out / "model.onnx")
    for f in source.iterdir():
        if f.is_file() and not f.name.startswith("model") and f.name != "manifest.json":
            shutil.copyfile(f, out / f.name)
    integer = sum(n.op_type == "MatMulInteger" for n in model.graph.node)
    log.info("ONNX INT8: %d MatMulInteger, %d MatMuls kept fp16 (%s), %d GatherBlockQuantized", integer, len(kept),
             ", ".join(keep), gathers)  # fmt: skip
    return kept


def _fp16_storage(model, names: set[str]) -> None:
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.name in names and n.input[1] in inits]:
        t = inits[node.input[1]]
        model.graph.initializer.remove(t)
        half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name + "_fp16")
        model.graph.initializer.append(half)
        cast = helper.make_node("Cast", [half.name], [t.name], name=f"{node.name}/Cast", to=TensorProto.FLOAT)
        model.graph.node.insert(list(model.graph.node).index(node), cast)
