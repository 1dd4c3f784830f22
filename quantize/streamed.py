"""Data-free weight compression done weight by weight while the graph is built, with NNCF's numerics.

`qwen-edge export --quantize` used to write the float export, load it whole and hand it to
nncf.compress_weights: fp16 for OpenVINO, fp32 for ONNX (MatMulNBits is made from fp32), plus
NNCF's working copies — 6.5 GB at 1.5B, and more than a 16 GB laptop has at 7B. A data-free
recipe needs no activations, so each weight can be quantized the moment the graph builder reads
it (export's `quantizer`), from a model whose tensors stay in their file (models.lazy). Peak memory
is then the compressed model plus one float tensor.

The numbers are NNCF's: its `do_integer_quantization` per weight, and for `ratio` < 1 its data-free
mixed-precision rule (the layers with the largest INT8 error go to 4 bit first, until `ratio` of
the weights are at 4 bit), computed in a first pass over the weights. Which weights NNCF would
give the backup precision is mirrored per format: the input embedding (at `embedding_mode` in
groups of EMBEDDING_GROUP, when set) and lm_head; a tied table stays at the backup precision. The
ONNX table is ONNX Runtime's GatherBlockQuantized: a tied table reads lm_head's 8-bit weights (one
copy, INT8); an untied one is asymmetric INT4 in blocks of TABLE_BLOCK (symmetric in blocks of 32 for
an int4_sym embedding_mode), as quantize/onnx_weights.py writes it.
Tests hold both paths to the same integers on a tiny model (the tied ONNX table excepted).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from tqdm import tqdm

from qwen_edge.export.ort_graph import TABLE_BLOCK, largest_block
from qwen_edge.export.quantized_weight import QuantizedWeight

from .recipes import EMBEDDING_GROUP, Recipe, RecipeError

log = logging.getLogger(__name__)

TABLE = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
ORT_TABLE = "int4_asym"  # GatherBlockQuantized's table: NNCF's asymmetric INT4 in blocks of TABLE_BLOCK
# ... or, for a recipe whose embedding_mode is int4_sym, symmetric (table_int4) in blocks of 32: the
# layout onnxruntime-web's WebGPU kernel reads (it refuses packed zero points) and the phone bundle's
SYMMETRIC_TABLE = ("table_int4_sym", 32)


def why_not(recipe: Recipe, cfg) -> str | None:
    """Why this recipe cannot be applied weight by weight to this model (None: it can)."""
    if recipe.data_aware:
        return "data-aware methods run the whole model on calibration text"
    if recipe.bits != 4:
        return "INT8 presets are compressed whole"
    if cfg.is_moe:
        return "Qwen2-MoE experts are compressed whole"
    return None


def matmuls(cfg, fmt: str) -> list[str]:
    """The 4-bit-eligible weights (NNCF's ratio-defining ones) of the graph `fmt` builds, in graph
    order: the ONNX `ort` graph packs q, k and v into one MatMul."""
    attn = ["qkv_proj"] if fmt == "onnx" else ["q_proj", "k_proj", "v_proj"]
    attn += ["o_proj"]
    return [
        f"model.layers.{i}.{part}.weight"
        for i in range(cfg.num_hidden_layers)
        for part in [*(f"self_attn.{a}" for a in attn), "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    ]


def read(weights, name: str) -> torch.Tensor:
    """A weight by the graph's name (the `ort` graph's packed qkv is read as its three parts)."""
    if name.endswith("self_attn.qkv_proj.weight"):
        base = name.removesuffix("qkv_proj.weight")
        return torch.cat([weights[f"{base}{p}_proj.weight"] for p in "qkv"])
    return weights[name]


@dataclasses.dataclass
class Plan:
    specs: dict[str, tuple[str, int]]  # weight name -> (NNCF mode, group size); absent: stays float
    recipe: Recipe  # as it runs: group size fitted as NNCF / MatMulNBits need
    # 4-bit weights already made by the mixed-precision pass (which reads every weight once anyway;
    # a GGUF's dequantization is most of the export's time): taken, not made again, by the quantizer
    done: dict[str, QuantizedWeight] = dataclasses.field(default_factory=dict)


def plan(recipe: Recipe, cfg, weights, fmt: str) -> Plan:
    """How each weight of the graph `fmt` builds is stored. `weights`: name -> [out, in] tensor."""
    names = matmuls(cfg, fmt)
    inputs = [cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * cfg.head_dim]
    if fmt == "onnx":  # MatMulNBits is blocked: the largest power of two <= the group dividing every input
        block = largest_block(inputs, recipe.group_size if recipe.group_size > 0 else 128)
        if block is None:
            raise RecipeError(f"no MatMulNBits block size (16..128) divides the input sizes {sorted(set(inputs))}")
        recipe = dataclasses.replace(recipe, group_size=block)
    else:
        recipe = recipe.fitted(inputs)
    primary = (recipe.mode, recipe.group_size)
    backup = None if recipe.backup == "none" else (recipe.backup, -1)
    if recipe.ratio >= 1 or backup is None:
        done, specs = {}, dict.fromkeys(names, primary)
    else:
        done = _ratio_pick(recipe, weights, names, fmt)
        specs = {n: primary if n in done else backup for n in names}
    head = primary if recipe.all_layers else backup
    if fmt == "onnx":
        specs[HEAD] = head
        if cfg.tie_word_embeddings and head is not None and head[0].startswith("int8"):
            recipe = dataclasses.replace(recipe, embedding_mode=None)  # the table is read from lm_head's 8 bits
        else:
            symmetric = recipe.embedding_mode == "int4_sym"
            block = largest_block([cfg.hidden_size], SYMMETRIC_TABLE[1] if symmetric else TABLE_BLOCK)
            mode, held = (SYMMETRIC_TABLE[0], "int4_sym") if symmetric else (ORT_TABLE, ORT_TABLE)
            specs[TABLE] = (mode, block) if block else None  # no block fits: the table stays float
            recipe = dataclasses.replace(recipe, embedding_mode=held if block else None)
    elif cfg.tie_word_embeddings:  # one table for the Gather and lm_head: NNCF keeps it at the backup
        specs[TABLE] = head
        if recipe.embedding_mode:
            log.warning("the embedding table is also lm_head (tied): it stays at %s", recipe.backup)
            recipe = dataclasses.replace(recipe, embedding_mode=None)
    else:
        specs[HEAD] = head
        specs[TABLE] = (recipe.embedding_mode, EMBEDDING_GROUP) if recipe.embedding_mode else head
    return Plan({k: v for k, v in specs.items() if v is not None}, recipe, done)


def _ratio_pick(recipe: Recipe, weights, names: list[str], fmt: str) -> dict[str, QuantizedWeight]:
    """NNCF's data-free mixed precision (its DataFreeCriterion): score 1 / (INT8 error + eps), the
    lowest scores to 4 bit while the 4-bit share stays under `ratio`. The OpenVINO path scores the
    fp16 weights NNCF would see in an fp16 IR; the ONNX path the fp32 ones. Returns the weights
    chosen for 4 bit, quantized while they were read."""
    from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
    from nncf.quantization.algorithms.weight_compression.weight_lowering import get_integer_quantization_error
    from nncf.tensor import Tensor

    dtype = np.float16 if fmt == "openvino" else np.float32
    scores, sizes, four = [], [], {}
    for name in tqdm(names, desc="mixed precision (data-free)", unit="weight", leave=False, disable=None):
        w = read(weights, name)
        array = w.to(torch.float32).numpy().astype(dtype)
        error = get_integer_quantization_error(Tensor(array), (1,), WeightCompressionConfig(), reduction="max_mean")
        scores.append(1 / (error + float(np.finfo(dtype).eps)))
        sizes.append(array.size)
        four[name] = quantize_weight(w, recipe.mode, recipe.group_size)
        del w, array
        _give_back_memory()
    total, at4, chosen = sum(sizes), 0, {}
    for i in sorted(range(len(names)), key=lambda i: scores[i]):
        if (at4 + sizes[i]) / total >= recipe.ratio:
            break
        chosen[names[i]] = four[names[i]]
        at4 += sizes[i]
    return chosen


def quantizer(plan: Plan):
    """export's Quantizer: the weight quantized as the plan says, None for weights it does not name."""

    def quantize(name: str, w: torch.Tensor) -> QuantizedWeight | None:
        spec = plan.specs.get(name)
        if spec is None:
            return None
        q = plan.done.pop(name, None) or quantize_weight(w, *spec)
        _give_back_memory()
        return q

    return quantize


def _give_back_memory() -> None:
    """Return freed heap to the system after each weight. glibc keeps the freed float copies and
    NNCF's temporaries in its heap, fragmented by the small compressed arrays kept between them:
    measured on the 1.5B, resident memory grew 3.8 GB over the weights without this and stayed at
    1.7 GB with it (the weights kept: 1.0 GB)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows, musl): nothing to trim
        return None


_LIBC = _libc()


CHUNK_VALUES = 1 << 24  # weights quantized 16M values (64 MB in fp32) at a time


def quantize_weight(w: torch.Tensor, mode: str, group: int) -> QuantizedWeight:
    """[out, in] -> integers, by NNCF's do_integer_quantization (asymmetric: uint8 values and zero
    points; symmetric: int8 values). Done in blocks
    of rows (every scale belongs to one row, so the result is the same): NNCF's float temporaries
    are several times the weight, 3 GB for the 1.5B's embedding table in one piece."""
    step = max(1, CHUNK_VALUES // w.shape[1])
    parts = [_quantize_rows(w[i : i + step], mode, group) for i in range(0, w.shape[0], step)]
    if len(parts) == 1:
        return parts[0]
    zp = None if parts[0].zero_point is None else np.concatenate([q.zero_point for q in parts])
    values, scale = np.concatenate([q.values for q in parts]), np.concatenate([q.scale for q in parts])
    return QuantizedWeight(values, scale, zp, parts[0].bits)


def _quantize_rows(w: torch.Tensor, mode: str, group: int) -> QuantizedWeight:
    array = w.detach().to(torch.float32).numpy()
    if mode == SYMMETRIC_TABLE[0]:
        return table_int4(array, group)
    from nncf import CompressWeightsMode
    from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
    from nncf.quantization.algorithms.weight_compression.weight_lowering import do_integer_quantization
    from nncf.tensor import Tensor

    config = WeightCompressionConfig(mode=CompressWeightsMode(mode), group_size=group)
    cw = do_integer_quantization(Tensor(array), config, reduction_axes=(1,))
    # copies: NNCF's OpenVINO-compiled path returns views of its output buffers, which its next call reuses
    zp = None if cw.zero_point is None else cw.zero_point.data.astype(np.uint8)
    return QuantizedWeight(np.array(cw.tensor.data), cw.scale.data.astype(np.float32), zp, config.num_bits)


def table_int4(w: np.ndarray, block: int) -> QuantizedWeight:
    """The phone bundle's table (quantize/onnx_int8.py): symmetric INT4 per block of a row, scale
    absmax / 7, values -7..7 (ONNX Runtime's GatherBlockQuantized stores them + 8)."""
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // block, block)
    scale = np.abs(blocks).max(-1, keepdims=True) / 7.0
    scale[scale == 0] = 1.0
    values = np.clip(np.rint(blocks / scale), -7, 7).astype(np.int8)
    return QuantizedWeight(values, scale.astype(np.float32), None, 4)
