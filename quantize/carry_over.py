"""Data-aware INT4 for the ONNX `ort` graph: NNCF's GPTQ / AWQ / scale estimation run on an
OpenVINO IR of the same weights, and the integers they chose carried over into MatMulNBits.

NNCF's ONNX backend has no GPTQ (3.4 refuses it), and its AWQ would have to run our graph with
explicit KV inputs and GroupQueryAttention. The OpenVINO path runs all of them, and the integers it
writes are exactly what MatMulNBits holds (values, zero points, one scale per group), so:

1. the fp32 `ort` graph's weights are read back by name (q, k and v unpacked, each [out, in]);
2. an fp16 stateful IR is built from them in memory and compressed by NNCF with the recipe and
   the calibration set `qwen-edge quantize` made, as for an OpenVINO folder;
3. each of the IR's compressed weights (`<name>`, `<name>/zero_point`, `<name>/scale`) replaces the
   `ort` graph's MatMul of the same name by MatMulNBits (q, k and v stacked: export.ort_graph.concat_rows
   meets parts of different precision exactly). The rest of the graph is kept as it was.

What a data-aware method changes is in the compressed weights only: GPTQ and scale estimation
choose each weight's integers and scales; AWQ folds its scales into the compressed weight that feeds
the scaled one (NNCF 3.4 merges only into MatMuls). Anything else of the IR that differs from the
`ort` graph's float weights would be lost, so it is checked: the IR must hold no float MatMul weight
that the `ort` graph quantizes, and the tests compare both folders' logits.
The embedding table is data-free either way (a Gather: no method touches it) and is made as
quantize/onnx_weights.py makes it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from qwen_edge.export.onnx_graph import kv_names
from qwen_edge.export.ort_graph import concat_rows, largest_block, nbits_arrays
from qwen_edge.export.quantized_weight import QuantizedWeight
from qwen_edge.models.lazy import LazyModel, LazyWeights, expected_shapes, mismatch
from qwen_edge.models.qwen2 import Qwen2Config

from .recipes import Recipe, RecipeError, compress_openvino

log = logging.getLogger(__name__)

TABLE = "model.embed_tokens.weight"


def compress_carried(model_path: Path, out_path: Path, cfg: Qwen2Config, recipe: Recipe, dataset) -> Recipe:
    """Write `out_path` (+ .data): the `ort` graph at `model_path` with the integers NNCF chose for
    `recipe` on an IR of its weights; returns the recipe that ran."""
    from qwen_edge.export import openvino_graph, openvino_ir

    from .onnx_weights import ORT_TABLE

    inputs = [cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * cfg.head_dim]
    block = largest_block(inputs, recipe.group_size if recipe.group_size > 0 else 128)
    if block is None:
        raise RecipeError(f"no MatMulNBits block size (16..128) divides the input sizes {sorted(set(inputs))}")
    symmetric_table = recipe.embedding_mode == "int4_sym"
    # The IR's table is compressed too, so that the methods calibrate on what the folder computes; the
    # ONNX table is then made as the data-free path makes it (the same NNCF numbers, in its blocks).
    ir_recipe = dataclasses.replace(recipe, group_size=block)
    model = openvino_graph.build(float_model(model_path, cfg, torch.float16), fp16=True)
    n = cfg.num_hidden_layers
    openvino_ir.to_stateful(model, kv_names(n, "past_key_values"), kv_names(n, "present"))
    model, ran = compress_openvino(model, ir_recipe, dataset)
    if ran.group_size != block:
        raise RecipeError(f"NNCF ran group {ran.group_size}, not the MatMulNBits block {block}")
    integers = ir_integers(model)
    del model
    _float_left(integers, cfg)
    replaced, tables = rewrite(model_path, out_path, integers, symmetric_table)
    log.info("ONNX: %d MatMulNBits carried over from NNCF's %s on OpenVINO, %d GatherBlockQuantized",
             replaced, ran.methods, tables)  # fmt: skip
    held = ("int4_sym" if symmetric_table else ORT_TABLE) if tables else None
    return dataclasses.replace(ran, embedding_mode=held)


def float_model(model_path: Path, cfg: Qwen2Config, dtype: torch.dtype) -> LazyModel:
    """The fp32 `ort` graph's weights by our names, read from its external data when asked for:
    MatMul weights are stored [in, out] (transposed back here), q / k / v packed (unpacked here)."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    stored = {t.name: t for t in proto.graph.initializer}

    def array(name: str) -> np.ndarray:
        t = stored[name]
        if t.data_location != onnx.TensorProto.EXTERNAL:
            return onnx.numpy_helper.to_array(t)
        info = {e.key: e.value for e in t.external_data}
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        # read, not mapped: a mapped file's pages count as this process's memory once touched (the
        # 1.5B's 7 GB of fp32 weights); read ones are only the kernel's page cache
        count = int(info["length"]) // dtype.itemsize
        array = np.fromfile(model_path.parent / info["location"], dtype, count, offset=int(info.get("offset", 0)))
        return array.reshape(tuple(t.dims))

    sizes = {"q": cfg.num_attention_heads * cfg.head_dim, "k": cfg.num_key_value_heads * cfg.head_dim}
    bounds = {"q": (0, sizes["q"]), "k": (sizes["q"], sizes["q"] + sizes["k"]),
              "v": (sizes["q"] + sizes["k"], sizes["q"] + 2 * sizes["k"])}  # fmt: skip

    packed: dict[str, list] = {}  # a packed q / k / v tensor, read once for its 3 parts: [array, parts left]

    def packed_part(name: str) -> np.ndarray:
        entry = packed.setdefault(name, [None, 3])
        if entry[0] is None:
            entry[0] = array(name)
        entry[1] -= 1
        return (packed.pop(name) if entry[1] == 0 else entry)[0]

    def reader(name: str, part: str | None = None, transpose: bool = False):
        def read():
            a = array(name) if part is None else packed_part(name)
            if part is not None:  # rows of q, k or v in the packed weight ([in, out]: columns) or bias
                lo, hi = bounds[part]
                a = a[..., lo:hi]
            if transpose:
                a = a.T
            return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

        return read

    shapes = expected_shapes(cfg)
    readers, got = {}, {}
    for name in shapes:
        source, part, transpose = name, None, len(shapes[name]) == 2 and name != TABLE
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            source, transpose = TABLE, False
        elif ".self_attn." in name and name.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj"):
            base, proj, kind = name.rsplit(".", 2)
            source, part = f"{base}.qkv_proj.{kind}", proj[0]
        readers[name] = reader(source, part, transpose)
        if source in stored:
            dims = tuple(stored[source].dims)
            dims = (*dims[:-1], bounds[part][1] - bounds[part][0]) if part else dims
            got[name] = dims[::-1] if transpose else dims
    problem = mismatch(shapes, got, str(model_path))
    if problem:
        raise RecipeError(f"{problem}: is it an fp32 `ort` export of this config?")
    return LazyModel(cfg, LazyWeights(readers))


def ir_integers(model) -> dict[str, QuantizedWeight]:
    """Every compressed weight of an NNCF-compressed ov.Model by name: NNCF's decompression
    subgraph's constants, `<name>` (u4 / i4 / u8 / i8), `<name>/zero_point`, `<name>/scale`."""
    consts = {op.get_friendly_name(): op for op in model.get_ops() if op.get_type_name() == "Constant"}
    out = {}
    for name, op in consts.items():
        if f"{name}/scale" not in consts:
            continue
        kind = op.get_element_type().get_type_name()
        if kind not in ("u4", "i4", "u8", "i8"):
            continue
        shape = tuple(op.get_output_shape(0))
        zp = consts.get(f"{name}/zero_point")
        values = _integers(op, shape)
        zero = None if zp is None else _integers(zp, tuple(zp.get_output_shape(0)))
        scale = consts[f"{name}/scale"].get_data().astype(np.float32).reshape(*shape[:-1], 1)
        out[name] = QuantizedWeight(values, scale, zero, 4 if kind in ("u4", "i4") else 8)
    return out


def _integers(op, shape: tuple) -> np.ndarray:
    """A constant's integers, unpacked: OpenVINO packs u4 / i4 two per byte, low nibble first."""
    kind = op.get_element_type().get_type_name()
    data = np.asarray(op.get_data())
    if kind in ("u8", "i8"):
        return np.array(data, np.uint8 if kind == "u8" else np.int8).reshape(shape)
    size = int(np.prod(shape))
    nibbles = np.empty(data.size * 2, np.uint8)
    nibbles[0::2], nibbles[1::2] = data & 15, data >> 4
    nibbles = nibbles[:size]
    if kind == "i4":
        return ((nibbles.astype(np.int8) << 4) >> 4).reshape(shape)  # sign-extend the nibble
    return nibbles.reshape(shape)


def _float_left(integers: dict, cfg: Qwen2Config) -> None:
    """Every MatMul weight the `ort` graph quantizes must come out of the IR compressed."""
    heads = ["lm_head.weight"] if "lm_head.weight" in integers or not cfg.tie_word_embeddings else []
    layers = [f"model.layers.{i}.{p}.weight" for i in range(cfg.num_hidden_layers)
              for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]  # fmt: skip
    missing = [n for n in layers + heads if n not in integers]
    if missing:
        raise RecipeError(f"NNCF left {missing[0]} (+{len(missing) - 1} more) uncompressed: nothing to carry over")


def _weight(integers: dict, name: str, take: bool = False) -> QuantizedWeight | None:
    """The integers for the `ort` graph's weight `name`; `take`: removed from `integers` (memory)."""
    get = integers.pop if take else integers.get
    if name.endswith("qkv_proj.weight"):
        base = name.removesuffix("qkv_proj.weight")
        parts = [get(f"{base}{p}_proj.weight", None) for p in "qkv"]
        return concat_rows(parts) if all(p is not None for p in parts) else None
    if name == "lm_head.weight" and name not in integers:
        return get(TABLE, None)  # tied: the IR's one table is also lm_head
    return get(name, None)


def rewrite(model_path: Path, out_path: Path, integers: dict, symmetric_table: bool) -> tuple[int, int]:
    """`out_path`: the graph at `model_path`, each MatMul whose weight `integers` holds replaced by
    MatMulNBits over those integers, the table quantized; weights it replaces are never read."""
    import onnx
    from onnx import external_data_helper, helper, numpy_helper

    from .onnx_weights import _half_scales, _quantize_embedding_gathers, save

    proto = onnx.load(str(model_path), load_external_data=False)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    replaced = 0
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        key = node.input[1]
        q = _weight(integers, key, take=True)
        if q is None:
            continue
        values, scale, zp, attrs = nbits_arrays(q)
        tensors = [numpy_helper.from_array(values, f"{key}.q{q.bits}"), numpy_helper.from_array(scale, f"{key}.scales")]
        tensors += [numpy_helper.from_array(zp, f"{key}.zero_points")] if zp is not None else []
        graph.initializer.remove(inits.pop(key))
        graph.initializer.extend(tensors)
        name = node.name.removesuffix("/MatMul") + "/MatMulNBits"
        node.CopyFrom(helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in tensors)], list(node.output),
                                       name=name, domain="com.microsoft", **attrs))  # fmt: skip
        replaced += 1
    external_data_helper.load_external_data_for_model(proto, str(model_path.parent))  # what is left: norms, biases
    tables = _quantize_embedding_gathers(proto, symmetric=symmetric_table)
    _half_scales(proto)
    save(proto, out_path)
    return replaced, tables
