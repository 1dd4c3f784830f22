"""INT4 weights for the `ort` ONNX graph through NNCF's ONNX backend, as ONNX Runtime's MatMulNBits.

NNCF writes MatMulNBits below opset 21 (blocked DequantizeLinear from 21 on, which ONNX Runtime's
CPU provider runs as a plain dequantize + MatMul); the `ort` graph is built at opset 20 for that.
What is done around NNCF, and why:
- the embedding Gather is left alone by NNCF (it would turn it into an invalid MatMulNBits) and
  becomes ONNX Runtime's GatherBlockQuantized here: NNCF's asymmetric INT4 in blocks of 128
  (symmetric in blocks of 32 for an int4_sym embedding_mode), values and zero points two per byte —
  the fp32 table was 545 MB of the real 0.5B's 870 MB;
- scales are stored fp16 with a Cast back to fp32 (_half_scales), as export/ort_graph.py writes them;
- the MatMuls NNCF leaves at 8 bit (lm_head, and the layers `ratio` keeps out of INT4) become
  MatMulNBits with bits=8 here: NNCF writes them as DequantizeLinear + MatMul, which decodes ~30x
  slower than MatMulNBits on CPU. The per-channel scale and zero point are repeated per block, so
  the 8-bit weights are exactly NNCF's (measured: lm_head at 8 rather than 4 bits is most of the
  gap to the OpenVINO folder's accuracy);
- asymmetric INT4: NNCF stores MatMulNBits zero points one per byte, [N, blocks]; ONNX Runtime
  wants two per byte, [N * ceil(blocks / 2)] — repacked here (otherwise the model does not load);
- NNCF 3.4 folds a MatMul's bias into MatMulNBits and also keeps the Add: the doubled bias is
  dropped from MatMulNBits here;
- `accuracy_level` 4 (int8 compute) on every MatMulNBits: ONNX Runtime then quantizes activations
  per block and uses int8 dot products, several times faster prefill on CPU for a small error.
Data-aware methods need NNCF to run the graph with our KV inputs; not wired for ONNX yet (data-free).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from qwen_edge.export.ort_graph import ACCURACY_LEVEL, TABLE_BLOCK, gather_q4, half_precision, largest_block

from .recipes import Recipe, RecipeError
from .streamed import ORT_TABLE, SYMMETRIC_TABLE, quantize_weight, table_int4

log = logging.getLogger(__name__)


def compress_onnx(model_path: Path, out_path: Path, recipe: Recipe) -> Recipe:
    """Write `out_path` (+ `out_path`.data): the graph at `model_path` with INT4 MatMulNBits
    weights; returns the recipe that ran."""
    import onnx

    from .nncf_import import import_nncf

    nncf = import_nncf()

    if recipe.bits != 4:
        raise RecipeError(
            "INT8 weights for ONNX are not built: NNCF writes DequantizeLinear + MatMul, which ONNX Runtime "
            "decodes ~30x slower than MatMulNBits on CPU; use an int4 preset, or an OpenVINO folder for INT8"
        )
    ran = recipe.without_data()
    # Weights stay in the external data file while NNCF works (a >2 GB model cannot even be
    # serialised as one protobuf); NNCF reads them from there and loads what it left uncompressed.
    model = onnx.load(str(model_path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset >= 21:
        raise RecipeError(f"{model_path.name} is opset {opset}; NNCF writes MatMulNBits below opset 21: re-export it")
    sizes = {int(t.dims[0]) for t in model.graph.initializer if len(t.dims) == 2}  # MatMul weights: [K, N]
    # MatMulNBits is blocked only (a power of two >= 16): NNCF writes channel-wise INT4 as a
    # DequantizeLinear of uint4 that ONNX Runtime rejects. Fit the largest block that divides K.
    start = ran.group_size if ran.group_size > 0 else 128
    block = largest_block(sizes, start)
    if block is None:
        raise RecipeError(f"no MatMulNBits block size (16..128) divides the input sizes {sorted(sizes)}")
    if block != ran.group_size:
        log.warning(
            "ONNX: INT4 group %d -> %d (MatMulNBits blocks must divide %s)", ran.group_size, block, sorted(sizes)
        )
    ran = dataclasses.replace(ran, group_size=block)
    from nncf.onnx.quantization.backend_parameters import BackendParameters

    external = {BackendParameters.EXTERNAL_DATA_DIR: str(model_path.parent.resolve())}
    # lm_head at the backup precision is done here (see _lm_head_to_nbits8); NNCF is told every
    # other MatMul is a "layer" (all_layers) so that it picks no last layer of its own.
    head = next((n.name for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output), None)
    head_8bit = head is not None and not ran.all_layers and ran.backup != "none"
    compressed = nncf.compress_weights(
        model,
        **dataclasses.replace(ran, all_layers=True).nncf_kwargs(None),
        ignored_scope=nncf.IgnoredScope(names=[head] if head_8bit else [], types=["Gather"], validate=False),
        advanced_parameters=nncf.AdvancedCompressionParameters(backend_params=external),
    )
    if head_8bit:
        head_8bit = _lm_head_to_nbits8(compressed, head, symmetric=ran.backup.endswith("_sym"))
    eight = _int8_matmuls_to_nbits(compressed) + head_8bit
    repacked = _repack_zero_points(compressed)
    doubled = _drop_doubled_biases(compressed)
    symmetric = ran.embedding_mode == "int4_sym"  # the WebGPU copy's table (streamed.SYMMETRIC_TABLE)
    tables = _quantize_embedding_gathers(compressed, symmetric=symmetric)
    halved = _half_scales(compressed)
    held = ("int4_sym" if symmetric else ORT_TABLE) if tables else None  # what GatherBlockQuantized holds
    ran = dataclasses.replace(ran, embedding_mode=held)
    for node in compressed.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", ACCURACY_LEVEL)])
    log.info(
        "ONNX: %d MatMulNBits (%d of them 8-bit, %d zero points repacked, %d doubled biases dropped), "
        "%d GatherBlockQuantized, %d scales stored fp16",
        _count(compressed, "MatMulNBits"),
        eight,
        repacked,
        doubled,
        tables,
        halved,
    )
    save(compressed, out_path)
    return ran


def save(model, out_path: Path) -> None:
    """`out_path` and its one external data file, at ONNX IR 10 (onnxruntime-web's limit)."""
    import onnx

    from qwen_edge.export.ort_graph import IR_VERSION

    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.save_model(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=out_path.name + ".data", size_threshold=1024)  # fmt: skip


def _int8_matmuls_to_nbits(model) -> int:
    """Each MatMul whose weight is NNCF's per-channel 8-bit DequantizeLinear ([K, N] values, [N]
    scales and zero points) -> one MatMulNBits with bits=8 holding the same values."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    done, dead = 0, set()
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        consumers = users.get(dq.output[0], [])
        if len(dq.input) < 2 or dq.input[0] not in inits or len(consumers) != 1:
            continue
        matmul = consumers[0]
        values = numpy_helper.to_array(inits[dq.input[0]])
        if matmul.op_type != "MatMul" or matmul.input[1] != dq.output[0] or values.ndim != 2:
            continue
        n = values.shape[1]
        scale = numpy_helper.to_array(inits[dq.input[1]]).reshape(n)
        zp = numpy_helper.to_array(inits[dq.input[2]]).reshape(n) if len(dq.input) > 2 and dq.input[2] else None
        if _nbits8(model, matmul, dq.input[0].removesuffix("_quantized"), values, scale, zp):
            model.graph.node.remove(dq)
            dead.update(dq.input)
            done += 1
    _drop_unused(model, dead)
    return done


def _lm_head_to_nbits8(model, name: str, symmetric: bool) -> bool:
    """The MatMul `name` (lm_head, left float by NNCF) -> MatMulNBits with 8-bit weights, one scale
    (and zero point) per output channel, as NNCF's INT8 backup would make them: NNCF does not find
    lm_head in the `ort` graph (its "last layer" is whichever weighted node it sorts last)."""
    from onnx import numpy_helper

    matmul = next((n for n in model.graph.node if n.name == name and n.op_type == "MatMul"), None)
    inits = {t.name: t for t in model.graph.initializer}
    if matmul is None or matmul.input[1] not in inits:
        return False
    w = numpy_helper.to_array(inits[matmul.input[1]]).astype(np.float32)  # [K, N]
    q = quantize_weight(torch.from_numpy(w.T), "int8_sym" if symmetric else "int8_asym", -1)  # NNCF's numbers
    values, scale = q.values.T, q.scale.reshape(-1)
    zp = None if q.zero_point is None else q.zero_point.reshape(-1)
    if not _nbits8(model, matmul, matmul.input[1], values, scale.astype(np.float32), zp):
        return False
    _drop_unused(model, {matmul.input[1]})
    return True


def _nbits8(model, matmul, weight: str, values: np.ndarray, scale: np.ndarray, zp: np.ndarray | None) -> bool:
    """Replace `matmul` by MatMulNBits(bits=8) over `values` ([K, N], int8 or uint8) with per-channel
    `scale` / `zp`, stored as `weight`_n8: transposed to [N, blocks, block], the channel's scale and
    zero point repeated per block (signed values shifted by 128: MatMulNBits stores unsigned)."""
    from onnx import helper, numpy_helper

    k, n = values.shape
    block = largest_block([k])
    if block is None:
        return False
    if zp is None:
        zp = np.zeros(n, values.dtype)
    if values.dtype == np.int8:
        values, zp = values.astype(np.int16) + 128, zp.astype(np.int16) + 128
    stored = np.ascontiguousarray(values.astype(np.uint8).T).reshape(n, k // block, block)
    prefix = weight + "_n8"
    tensors = [
        numpy_helper.from_array(stored, prefix),
        numpy_helper.from_array(np.repeat(scale.astype(np.float32), k // block), prefix + "_scales"),
        numpy_helper.from_array(np.repeat(zp.astype(np.uint8), k // block), prefix + "_zero_points"),
    ]
    model.graph.initializer.extend(tensors)
    fused = helper.make_node(
        "MatMulNBits", [matmul.input[0], *(t.name for t in tensors)], list(matmul.output),
        name=matmul.name + "_Q8", domain="com.microsoft", K=k, N=n, bits=8, block_size=block,
    )  # fmt: skip
    at = list(model.graph.node).index(matmul)
    model.graph.node.remove(matmul)
    model.graph.node.insert(at, fused)
    return True


def _drop_unused(model, names: set) -> None:
    used = {name for node in model.graph.node for name in node.input}
    for t in [t for t in model.graph.initializer if t.name in names and t.name not in used]:
        model.graph.initializer.remove(t)


def _repack_zero_points(model) -> int:
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) < 4 or not node.input[3]:
            continue
        zp = inits[node.input[3]]
        values = numpy_helper.to_array(zp)
        if values.ndim != 2:  # already in ONNX Runtime's layout
            continue
        if values.shape[1] % 2:
            values = np.pad(values, ((0, 0), (0, 1)), constant_values=8)
        packed = (values[:, 0::2] & 15) | ((values[:, 1::2] & 15) << 4)
        zp.CopyFrom(numpy_helper.from_array(packed.astype(np.uint8).reshape(-1), zp.name))
        done += 1
    return done


def _quantize_embedding_gathers(model, symmetric: bool = False) -> int:
    """Each Gather of a 2-D float table (the token embedding) -> com.microsoft GatherBlockQuantized:
    per row, blocks of TABLE_BLOCK values at NNCF's asymmetric INT4 (what the streamed export
    writes), or `symmetric`: blocks of 32 scaled by absmax / 7 into -7..7, stored +8 (the phone's
    and the WebGPU copy's: streamed.SYMMETRIC_TABLE); uint4 pairs."""
    block = SYMMETRIC_TABLE[1] if symmetric else TABLE_BLOCK
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    done = 0
    for i, node in enumerate(model.graph.node):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        fits = largest_block([table.dims[1]], block) if table is not None and len(table.dims) == 2 else None
        if fits is None:
            continue
        w = numpy_helper.to_array(table).astype(np.float32)
        q = table_int4(w, fits) if symmetric else quantize_weight(torch.from_numpy(w), ORT_TABLE, fits)
        packed, scale, zp, attrs = gather_q4(q)
        name = table.name
        table.CopyFrom(numpy_helper.from_array(packed, name + "_q4"))
        extra = [numpy_helper.from_array(scale, name + "_scales")]
        extra += [numpy_helper.from_array(zp, name + "_zero_points")] if zp is not None else []
        model.graph.initializer.extend(extra)
        new = helper.make_node(
            "GatherBlockQuantized", [name + "_q4", node.input[1], *(t.name for t in extra)], list(node.output),
            name=node.name + "BlockQuantized", domain="com.microsoft", **attrs,
        )  # fmt: skip
        model.graph.node.remove(node)
        model.graph.node.insert(i, new)
        done += 1
    return done


def _half_scales(model) -> int:
    """Each fp32 scales initializer of MatMulNBits / GatherBlockQuantized that fp16 holds exactly
    enough (export.ort_graph.half_precision) -> stored fp16, with a Cast back that ONNX Runtime
    folds at load: what export.ort_graph writes for the same weights."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    casts = []
    for node in model.graph.node:
        t = inits.get(node.input[2]) if node.op_type in ("MatMulNBits", "GatherBlockQuantized") else None
        if t is None or t.data_type != TensorProto.FLOAT:
            continue
        half = half_precision(numpy_helper.to_array(t))
        if half is None:
            continue
        name = t.name
        t.CopyFrom(numpy_helper.from_array(half, name + "_fp16"))
        casts.append(helper.make_node("Cast", [t.name], [name], name=f"{name}/Cast", to=TensorProto.FLOAT))
        del inits[name]  # a scales tensor shared by two nodes is converted once
    for cast in reversed(casts):  # inputs are initializers: first in the graph is always in order
        model.graph.node.insert(0, cast)
    return len(casts)


def _drop_doubled_biases(model) -> int:
    """NNCF 3.4 moves a MatMul's bias into MatMulNBits's bias input but keeps the Add after it, so
    the bias is added twice (Qwen2's large q/k/v biases: perplexity 45 -> 9000). Drop the input."""
    adds = {}
    for node in model.graph.node:
        if node.op_type == "Add":
            for i, name in enumerate(node.input):
                adds.setdefault(name, set()).add(node.input[1 - i])
    dropped = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and len(node.input) > 5 and node.input[5]:
            if node.input[5] in adds.get(node.output[0], ()):
                del node.input[4:]
                dropped += 1
    return dropped


def _count(model, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.node)
