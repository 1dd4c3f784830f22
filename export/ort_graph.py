"""The `ort` graph: our Qwen2 weights laid out on ONNX Runtime's fused CPU kernels.

Built node by node from the torch module's tensors (no trace), with hierarchical node names
(`/model/layers.3/attn/GroupQueryAttention`) so quantizers can select layers by name. Checked
against the torch model by tests, and written with a genai_config.json so onnxruntime-genai (and
its Android / iOS packages) loads the folder as it is.

One layer, for hidden state h and residual r:

    r, x = SkipSimplifiedLayerNorm(r, h)            (layer 0: SimplifiedLayerNorm(embedding))
    qkv  = MatMul(x, Wqkv) + bqkv                   one packed projection
    a, present.k, present.v = GroupQueryAttention(qkv, past.k, past.v, seqlens_k, total_len,
                                                  cos_cache, sin_cache)   rotary fused in
    r, x = SkipSimplifiedLayerNorm(r, MatMul(a, Wo))
    h    = MatMul(silu(MatMul(x, Wg)) * MatMul(x, Wu), Wd)     (Qwen2-MoE: the MoE kernel, see _moe)

Beside model.onnx (logits of every position: what onnxruntime-genai reads),
model_last_logits.onnx is the same graph over the same weights file with the lm_head fed only
the last `num_logits` positions (an input): what our runtime and the phone app run — 1 to
decode, k + 1 to check k speculative guesses, all for evaluation (the vocabulary-wide MatMul is
a third of a 0.5B model's prefill compute otherwise).

seqlens_k (per row, last attended index) and total_len come from attention_mask, as the
kernel expects; positions are implied by them, so this graph has no position_ids input and
expects rows without left padding (how batch-1 apps and onnxruntime-genai run it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from qwen_edge.models.qwen2 import Qwen2ForCausalLM

from .external_data import ExternalData
from .onnx_graph import kv_names
from .quantized_weight import QuantizedWeight, Quantizer

OPSET = 20  # below 21, NNCF compresses MatMul weights to ONNX Runtime's MatMulNBits
IR_VERSION = 10  # onnx 1.23 writes 14; onnxruntime-web 1.30 (the mobile demo's) reads up to 13
MS = "com.microsoft"
# MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute — activations quantized per block and
# int8 dot products: several times faster prefill on CPU for a small error.
ACCURACY_LEVEL = 4
# GatherBlockQuantized's INT4 table: blocks of 128 (or the largest power of two dividing the hidden
# size), asymmetric: as the symmetric blocks of 32 it replaced on WikiText-2 (0.5B +3.67% / +3.68%,
# 1.5B +4.12% / +4.07%; RESULTS.md), for a quarter of the scales.
TABLE_BLOCK = 128


class OrtGraphError(ValueError):
    """The model cannot be laid out on ONNX Runtime's fused kernels."""


class _Graph:
    """Nodes and initializers as they are written; each layer part below adds its own."""

    def __init__(self, model: Qwen2ForCausalLM, data: ExternalData, quantizer: Quantizer | None = None):
        self.cfg, self.data, self.nodes, self.inits = model.config, data, [], []
        self.sd = model.state_dict()  # detached tensors, or a LazyWeights reading each on access
        self.quantizer = quantizer
        self.written: dict[str, tuple[list[str], dict]] = {}  # MatMulNBits inputs already written, by weight

    def node(self, op, name, inputs, n_out=1, domain="", **attrs):
        outputs = [f"{name}/output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0] if n_out == 1 else outputs

    def weight(self, name, tensor):
        array = tensor.contiguous().numpy() if isinstance(tensor, torch.Tensor) else tensor
        self.inits.append(self.data.tensor(name, array))
        return name

    def const(self, name, array):
        dtype = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        self.inits.append(helper.make_tensor(name, dtype, array.shape, array.flatten().tolist()))
        return name

    def scales(self, name, array):
        """fp32 scales, stored fp16 with a Cast back to fp32 when fp16 holds every one at full
        precision: half the bytes (a tenth of an INT4 folder at g32), the precision OpenVINO's IR
        keeps them at. ONNX Runtime folds the Cast once, at load: MatMulNBits still packs fp32 scales."""
        half = half_precision(array) if array.dtype == np.float32 else None
        if half is None:
            return self.weight(name, array)
        return self.node("Cast", f"{name}/Cast", [self.weight(name + "_fp16", half)], to=TensorProto.FLOAT)

    def linear(self, name, x, key, w=None):
        """x @ w.T for w [out, in] (the weight `key` unless given): MatMul over w stored [in, out],
        or MatMulNBits when the quantizer returns integers for it."""
        if key not in self.written:
            w = self.sd[key] if w is None else w
            q = self.quantizer(key, w) if self.quantizer is not None else None
            if q is None:
                return self.node("MatMul", f"{name}/MatMul", [x, self.weight(key, w.T)])
            self.written[key] = self.nbits(key, q)
        inputs, attrs = self.written[key]
        return self.node("MatMulNBits", f"{name}/MatMulNBits", [x, *inputs], domain=MS, **attrs)

    def nbits(self, key: str, q: QuantizedWeight) -> tuple[list[str], dict]:
        """MatMulNBits's B, scales and zero points for `q` as initializers, and its attributes."""
        values, scale, zp, attrs = nbits_arrays(q)
        names = [self.weight(f"{key}.q{q.bits}", values), self.scales(f"{key}.scales", scale)]
        return names + ([self.weight(f"{key}.zero_points", zp)] if zp is not None else []), attrs

    def rms_norm(self, name, key, h, residual=None):
        """(normed, residual): SimplifiedLayerNorm(h) first, then SkipSimplifiedLayerNorm(residual + h)."""
        w, eps = self.weight(key, self.sd[key]), float(self.cfg.rms_norm_eps)
        if residual is None:
            x = self.node(
                "SimplifiedLayerNormalization", f"{name}/LayerNorm", [h, w], epsilon=eps, axis=-1, stash_type=1
            )
            return x, h
        x, _, _, residual = self.node(
            "SkipSimplifiedLayerNormalization",
            f"{name}/SkipLayerNorm",
            [residual, h, w],
            n_out=4,
            domain=MS,
            epsilon=eps,
        )
        return x, residual


def _attention(g: _Graph, i: int, x: str, lengths: tuple[str, str], rotary: tuple[str, str]) -> str:
    """qkv = MatMul(x, Wqkv) + b; GroupQueryAttention (rotary fused, KV written to present.i.*); o_proj."""
    cfg, sd, a, base = g.cfg, g.sd, f"model.layers.{i}.self_attn.", f"/model/layers.{i}/attn"
    w_qkv = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]])
    b_qkv = torch.cat([sd[a + "q_proj.bias"], sd[a + "k_proj.bias"], sd[a + "v_proj.bias"]])
    qkv = g.linear(f"{base}/qkv_proj", x, a + "qkv_proj.weight", w_qkv)
    qkv = g.node("Add", f"{base}/qkv_proj/Add", [qkv, g.weight(a + "qkv_proj.bias", b_qkv)])
    attn, _, _ = g.node(
        "GroupQueryAttention",
        f"{base}/GroupQueryAttention",
        [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", *lengths, *rotary],
        n_out=3,
        domain=MS,
        num_heads=cfg.num_attention_heads,
        kv_num_heads=cfg.num_key_value_heads,
        scale=float(cfg.head_dim**-0.5),
        do_rotary=1,
        rotary_interleaved=0,
        local_window_size=-1,
    )
    g.nodes[-1].output[1:] = [f"present.{i}.key", f"present.{i}.value"]
    return g.linear(f"{base}/o_proj", attn, a + "o_proj.weight")


def _embedding(g: _Graph) -> str:
    """Gather from the table, or GatherBlockQuantized when the quantizer returns (symmetric) integers.
    A tied table whose lm_head is quantized to 8 bits is read from lm_head's MatMulNBits weights
    (GatherBlockQuantized takes their [vocab, blocks, block] layout as it is): one copy of the
    vocabulary in the folder instead of two (0.5B: 85 MB less), at 8 bits rather than 4."""
    key = "model.embed_tokens.weight"
    if g.cfg.tie_word_embeddings and g.quantizer is not None:
        head = g.quantizer("lm_head.weight", g.sd["lm_head.weight"])
        if head is not None and head.bits == 8:
            g.written["lm_head.weight"] = g.nbits("lm_head.weight", head)
            (data, scales, *zp), attrs = g.written["lm_head.weight"]
            blocks = attrs["K"] // attrs["block_size"]
            shape = g.const(f"{key}/blocks_shape", np.array([-1, blocks, 1], np.int64))
            per_block = [g.node("Reshape", f"/model/embed_tokens/{n}/Reshape", [t, shape]) for n, t in
                         zip(("scales", "zero_points"), [scales, *zp], strict=False)]  # fmt: skip
            rows = g.node("GatherBlockQuantized", "/model/embed_tokens/GatherBlockQuantized",
                          [data, "input_ids", *per_block], domain=MS, bits=8, block_size=attrs["block_size"],
                          gather_axis=0, quantize_axis=2)  # fmt: skip
            flat = g.const(f"{key}/rows_shape", np.array([0, 0, -1], np.int64))
            return g.node("Reshape", "/model/embed_tokens/Reshape", [rows, flat])
    table = g.sd[key]
    q = g.quantizer(key, table) if g.quantizer is not None else None
    if q is None:
        return g.node("Gather", "/model/embed_tokens/Gather", [g.weight(key, table), "input_ids"])
    if q.bits != 4 or q.values.ndim != 3:
        raise OrtGraphError("GatherBlockQuantized tables are written INT4 in blocks here")
    packed, scales, zp, attrs = gather_q4(q)
    inputs = [g.weight(f"{key}_q4", packed), "input_ids", g.scales(f"{key}_scales", scales)]
    inputs += [g.weight(f"{key}_zero_points", zp)] if zp is not None else []
    return g.node("GatherBlockQuantized", "/model/embed_tokens/GatherBlockQuantized", inputs, domain=MS, **attrs)


def gather_q4(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """GatherBlockQuantized's packed table, scales, zero points and attributes for an INT4 table
    ([rows, blocks, block] values): asymmetric 0..15 with zero points [rows, blocks], or symmetric
    -7..7 stored + 8 (the kernel's default zero point); values and zero points two per byte, low
    nibble first (checked against ONNX Runtime's kernel by the tests)."""
    rows, blocks, block = q.values.shape
    values = q.values.view(np.uint8)
    if q.zero_point is None:
        values = values + np.uint8(8)  # -7..7 -> 1..15 (wraps)
    values = values.reshape(rows, blocks * block)
    scales = q.scale.reshape(rows, blocks).astype(np.float32)
    zp = None
    if q.zero_point is not None:
        zp = np.pad(q.zero_point.reshape(rows, blocks).astype(np.uint8), ((0, 0), (0, blocks % 2)))
        zp = zp[:, 0::2] | (zp[:, 1::2] << 4)
    attrs = {"bits": 4, "block_size": block, "gather_axis": 0, "quantize_axis": 1}
    return values[:, 0::2] | (values[:, 1::2] << 4), scales, zp, attrs


def nbits_arrays(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """MatMulNBits's B [N, blocks, block * bits / 8], scales [N * blocks] fp32, zero points (packed
    two per byte at 4 bits) or None, and its attributes, for `q` in ONNX Runtime's layout."""
    values, scale, zp, blocks = _blocked(q)
    n, block = values.shape[0], values.shape[2]
    attrs = {"K": blocks * block, "N": n, "bits": q.bits, "block_size": block, "accuracy_level": ACCURACY_LEVEL}
    half = 1 << (q.bits - 1)
    if zp is None:  # symmetric: stored unsigned, the kernel's default zero point (8 or 128) undoes it
        values = values.view(np.uint8) + np.uint8(half)  # two's complement + half wraps to the offset
    if q.bits == 4:
        values = values[..., 0::2] | (values[..., 1::2] << 4)
        if zp is not None:
            zp = np.pad(zp, ((0, 0), (0, blocks % 2)), constant_values=half)
            zp = zp[:, 0::2] | (zp[:, 1::2] << 4)
    return values, scale.reshape(n * blocks), None if zp is None else zp.reshape(-1), attrs


def concat_rows(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """Weights quantized apart, stacked along their output rows as one MatMulNBits weight (the `ort`
    graph's packed q, k, v). Parts that differ in bits, group or symmetry meet exactly: at the most
    bits (a 4-bit value is the same integer in 8), at the smallest group (a channel's or a larger
    group's scale repeated per block), asymmetric if any part is (a symmetric part's values offset
    by half its range, with that offset as its zero point)."""
    if all((p.bits, p.group, p.zero_point is None) == (parts[0].bits, parts[0].group, parts[0].zero_point is None)
           for p in parts):  # fmt: skip
        zp = None if parts[0].zero_point is None else np.concatenate([p.zero_point for p in parts])
        return QuantizedWeight(np.concatenate([p.values for p in parts]), np.concatenate([p.scale for p in parts]),
                               zp, parts[0].bits)  # fmt: skip
    k = parts[0].values.shape[1] * (parts[0].values.shape[2] if parts[0].values.ndim == 3 else 1)
    block = min(p.group if p.group > 0 else k for p in parts)
    asym = any(p.zero_point is not None for p in parts)
    values, scales, zps = [], [], []
    for p in parts:
        n, group = p.values.shape[0], p.group if p.group > 0 else k
        if group % block:
            raise OrtGraphError(f"groups of {group} and {block} cannot share one MatMulNBits weight")
        repeat = group // block
        v = p.values.reshape(n, k // block, block)
        s = np.repeat(p.scale.reshape(n, -1), repeat, 1)
        zp = None if p.zero_point is None else np.repeat(p.zero_point.reshape(n, -1), repeat, 1)
        if asym and zp is None:
            offset = 1 << (p.bits - 1)
            v, zp = (v.astype(np.int16) + offset).astype(np.uint8), np.full(s.shape, offset, np.uint8)
        values.append(v)
        scales.append(s.reshape(n, k // block, 1))
        zps.append(None if zp is None else zp.reshape(n, k // block, 1))
    zp = np.concatenate(zps) if asym else None
    return QuantizedWeight(np.concatenate(values), np.concatenate(scales), zp, max(p.bits for p in parts))


def half_precision(array: np.ndarray) -> np.ndarray | None:
    """`array` as fp16 if every value is finite there and none falls below fp16's normal range
    (where it would keep fewer than 11 significant bits); else None."""
    with np.errstate(over="ignore"):  # checked below
        half = array.astype(np.float16)
    tiny = np.finfo(np.float16).tiny
    return half if np.isfinite(half).all() and ((array == 0) | (np.abs(array) >= tiny)).all() else None


def largest_block(sizes, at_most: int = 128) -> int | None:
    """The largest MatMulNBits block (a power of two, 16..128, at most `at_most`) dividing every size."""
    return next((b for b in (128, 64, 32, 16) if b <= at_most and all(k % b == 0 for k in sizes)), None)


def _blocked(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """(values [N, blocks, block], scales [N, blocks], zero points [N, blocks] or None, blocks):
    a per-channel weight gets the largest block (128..16) dividing its input size, its channel's
    scale and zero point repeated per block — the same values, in the layout MatMulNBits reads."""
    n = q.values.shape[0]
    if q.values.ndim == 3:
        blocks = q.values.shape[1]
        zp = None if q.zero_point is None else q.zero_point.reshape(n, blocks)
        return q.values, q.scale.reshape(n, blocks).astype(np.float32), zp, blocks
    k = q.values.shape[1]
    block = largest_block([k])
    if block is None:
        raise OrtGraphError(f"no MatMulNBits block (16..128) divides the input size {k}")
    blocks = k // block
    zp = None if q.zero_point is None else np.repeat(q.zero_point.reshape(n, 1), blocks, 1)
    scale = np.repeat(q.scale.reshape(n, 1).astype(np.float32), blocks, 1)
    return q.values.reshape(n, blocks, block), scale, zp, blocks


def _mlp(g: _Graph, name: str, x: str, prefix: str) -> str:
    """MatMul(silu(MatMul(x, Wg)) * MatMul(x, Wu), Wd)."""
    gate = g.linear(f"{name}/gate_proj", x, prefix + "gate_proj.weight")
    up = g.linear(f"{name}/up_proj", x, prefix + "up_proj.weight")
    act = g.node("Mul", f"{name}/act_fn/Mul", [gate, g.node("Sigmoid", f"{name}/act_fn/Sigmoid", [gate])])
    return g.linear(f"{name}/down_proj", g.node("Mul", f"{name}/Mul", [act, up]), prefix + "down_proj.weight")


def _moe(g: _Graph, i: int, x: str) -> str:
    """Qwen2-MoE's block on ONNX Runtime's MoE kernel (sparse: only the chosen experts run):

        logits = MatMul(x, Wrouter)                           [tokens, experts]
        y = MoE(x, logits, W1 = gate|up interleaved, W2)      softmax, top-k, SwiGLU experts
        y += Sigmoid(MatMul(x, Wsg)) * MLP_shared(x)          when a shared expert is sized

    The CPU kernel takes SwiGLU with the gate and up rows interleaved ([e, 2i, h]); alpha 1, beta 0
    and no clamp make it silu(gate) * up, Qwen's activation."""
    cfg, sd, p, base = g.cfg, g.sd, f"model.layers.{i}.mlp.", f"/model/layers.{i}/moe"
    gate_up = sd[p + "experts.gate_up_proj"]  # [e, 2i, h]: the gate rows, then the up rows
    e, two_i, h = gate_up.shape
    interleaved = gate_up.reshape(e, 2, two_i // 2, h).transpose(1, 2).reshape(e, two_i, h)
    shape = g.node("Shape", f"{base}/Shape", [x])
    rows = g.node("Reshape", f"{base}/Reshape", [x, g.const(f"{base}/rows", np.array([-1, h], np.int64))])
    logits = g.linear(f"{base}/router", rows, p + "gate.weight")
    y = g.node(
        "MoE",
        f"{base}/MoE",
        [
            rows,
            logits,
            g.weight(p + "experts.fc1", interleaved),
            "",
            g.weight(p + "experts.fc2", sd[p + "experts.down_proj"]),
        ],
        domain=MS,
        k=cfg.num_experts_per_tok,
        activation_type="swiglu",
        swiglu_fusion=1,
        activation_alpha=1.0,
        activation_beta=0.0,
        swiglu_limit=float(np.finfo(np.float32).max),
        normalize_routing_weights=int(cfg.norm_topk_prob),
    )
    y = g.node("Reshape", f"{base}/Restore", [y, shape])
    if not cfg.shared_expert_intermediate_size:
        return y
    shared = _mlp(g, f"{base}/shared_expert", x, p + "shared_expert.")
    weight = g.node(
        "Sigmoid",
        f"{base}/shared_expert_gate/Sigmoid",
        [g.linear(f"{base}/shared_expert_gate", x, p + "shared_expert_gate.weight")],
    )
    return g.node("Add", f"{base}/Add", [y, g.node("Mul", f"{base}/shared_expert/Scale", [shared, weight])])


def build(
    model: Qwen2ForCausalLM, path: Path, context_length: int | None = None, quantizer: Quantizer | None = None
) -> dict:
    """Write `path` (+ `path`.data); return the io spec. Weights stored in the model's dtype, or as
    the quantizer returns them (MatMulNBits; the embedding GatherBlockQuantized). The model may be
    a models.lazy.LazyModel: each weight is then read, written and dropped in turn."""
    cfg = model.config
    dtype = model.state_dict()["model.norm.weight"].dtype
    if dtype not in (torch.float32, torch.float16):
        raise OrtGraphError(f"the ort graph stores fp32 or fp16 weights, not {dtype}")
    elem = TensorProto.FLOAT if dtype == torch.float32 else TensorProto.FLOAT16
    context_length = context_length or cfg.max_position_embeddings

    with ExternalData(path.parent / (path.name + ".data")) as data:
        g = _Graph(model, data, quantizer)
        one = g.const("/model/constants/INT64/[1]", np.array([1], np.int64))
        # seqlens_k = sum(mask) - 1 and total_sequence_length, as int32 (the kernel's contract)
        mask_sum = g.node("ReduceSum", "/model/attn_mask/ReduceSum", ["attention_mask", one], keepdims=0)
        seqlens = g.node(
            "Cast",
            "/model/attn_mask/seqlens_k",
            [g.node("Sub", "/model/attn_mask/Sub", [mask_sum, one])],
            to=TensorProto.INT32,
        )
        shape = g.node("Shape", "/model/attn_mask/Shape", ["attention_mask"])
        total = g.node(
            "Gather",
            "/model/attn_mask/Gather",
            [shape, g.const("/model/constants/INT64/1", np.array(1, np.int64))],
            axis=0,
        )
        total = g.node("Cast", "/model/attn_mask/total_sequence_length", [total], to=TensorProto.INT32)
        freqs = torch.outer(torch.arange(context_length, dtype=torch.float32), model.inv_freq.float())
        # stored, not computed in the graph: ONNX Runtime's folded copy measured 10 MB more resident
        # memory at 0.5B than these 8 MB read from the file
        cos = g.weight("cos_cache", (freqs.cos() * model.rope_scale).to(dtype))
        sin = g.weight("sin_cache", (freqs.sin() * model.rope_scale).to(dtype))

        h, residual = _embedding(g), None
        for i in range(cfg.num_hidden_layers):
            p, base = f"model.layers.{i}.", f"/model/layers.{i}"
            x, residual = g.rms_norm(f"{base}/input_layernorm", p + "input_layernorm.weight", h, residual)
            o = _attention(g, i, x, (seqlens, total), (cos, sin))
            x, residual = g.rms_norm(
                f"{base}/post_attention_layernorm", p + "post_attention_layernorm.weight", o, residual
            )
            h = _moe(g, i, x) if cfg.is_moe_layer(i) else _mlp(g, f"{base}/mlp", x, p + "mlp.")
        x, _ = g.rms_norm("/model/norm", "model.norm.weight", h, residual)
        # A tied head is stored once more: MatMul wants it [hidden, vocab], MatMulNBits [vocab, blocks, block].
        g.linear("/lm_head", x, "lm_head.weight")
        g.nodes[-1].output[0] = "logits"

    kv = ["batch_size", cfg.num_key_value_heads, "past_sequence_length", cfg.head_dim]
    kv_out = ["batch_size", cfg.num_key_value_heads, "total_sequence_length", cfg.head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ] + [helper.make_tensor_value_info(n, elem, kv) for n in kv_names(cfg.num_hidden_layers, "past_key_values")]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch_size", "sequence_length", cfg.vocab_size])] + [
        helper.make_tensor_value_info(n, elem, kv_out) for n in kv_names(cfg.num_hidden_layers, "present")
    ]
    graph = helper.make_graph(g.nodes, "qwen2", inputs, outputs, initializer=g.inits)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)], producer_name="qwen-edge"
    )
    proto.ir_version = IR_VERSION
    onnx.save(proto, path)
    shape = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return {
        "inputs": {v.name: shape(v) for v in inputs},
        "outputs": {v.name: shape(v) for v in outputs},
        "kv_layout": "[batch, kv_heads, length, head_dim]",
        "context_length": context_length,
    }


LAST_LOGITS = "model_last_logits.onnx"


NUM_LOGITS = "num_logits"


def write_last_logits(path: Path) -> str:
    """Write LAST_LOGITS beside `path`: its graph, reading the same external data, with a Slice to
    the last `num_logits` positions (an int64 [1] input) before the node that makes the logits:
    1 to decode, the k + 1 positions a speculative step checks, never every prompt position.
    (Not an input with a default: ONNX Runtime's IO binding cannot bind those.) Returns the file name."""
    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    head = next(i for i, n in enumerate(graph.node) if "logits" in n.output)
    graph.input.append(helper.make_tensor_value_info(NUM_LOGITS, TensorProto.INT64, [1]))
    for name, value in (("/model/last/ends", 2**62), ("/model/last/axes", 1)):
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
    hidden = graph.node[head].input[0]
    names = [hidden, "/model/last/starts", "/model/last/ends", "/model/last/axes"]
    graph.node.insert(head, helper.make_node("Slice", names, ["/model/last/output_0"], name="/model/last/Slice"))
    graph.node.insert(head, helper.make_node("Neg", [NUM_LOGITS], ["/model/last/starts"], name="/model/last/Neg"))
    graph.node[head + 2].input[0] = "/model/last/output_0"
    logits = next(o for o in graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = NUM_LOGITS
    onnx.save(proto, str(path.parent / LAST_LOGITS))
    return LAST_LOGITS


def genai_config(model: Qwen2ForCausalLM, generation: dict, context_length: int, filename: str = "model.onnx") -> dict:
    """What onnxruntime-genai reads to run the folder (its Android / iOS packages too)."""
    cfg = model.config
    eos = generation.get("eos_token_id", cfg.eos_token_id)
    return {
        "model": {
            "bos_token_id": generation.get("bos_token_id", cfg.bos_token_id),
            "context_length": context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": cfg.num_attention_heads,
                "num_hidden_layers": cfg.num_hidden_layers,
                "num_key_value_heads": cfg.num_key_value_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": (eos if isinstance(eos, int) else eos[-1]) if eos is not None else 0,
            "type": "qwen2",
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "do_sample": False,
            "max_length": context_length,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def write_genai_config(folder: Path, model: Qwen2ForCausalLM, context_length: int) -> None:
    gen_path = folder / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    config = genai_config(model, generation, context_length)
    (folder / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
