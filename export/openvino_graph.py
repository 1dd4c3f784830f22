"""Qwen2 built op by op as an OpenVINO model from the torch module's weights (no trace).

The graph is written in the shapes OpenVINO's CPU and GPU plugins fuse, which a trace through
ONNX does not produce (measured on the 0.5B shape in LLMPipeline: 4x slower prefill, 2x slower
decode for the traced IR):

    attention   ScaledDotProductAttention over past ++ new keys, GQA as Unsqueeze -> Broadcast
                -> Reshape (the CPU plugin then keeps the KV cache inside the attention kernel)
    RoPE        x * cos + concat(-x2, x1) * sin (the rotate-half form the plugins fuse)
    RMSNorm     x / sqrt(mean(x^2) + eps) * w,  MLP: swish(gate) * up
    Qwen2-MoE   every expert at once, weighted by a sparse routing matrix (see _moe)

Weights are fp16 constants each behind one Convert (the form NNCF compresses and the plugins
decompress on the fly), or fp32 constants; or, given a `quantizer` (see QuantizedWeight), integer
constants decompressed as NNCF writes them, compressed as each weight is read (the model may be a
models.lazy.LazyModel: then no more than one weight is ever held in float). The model is
stateless here — past_key_values.{i}.* in, present.{i}.* out, optimum's names — and
`openvino_ir.to_stateful` turns it stateful.
Tests hold it to our torch model's logits.
"""

from __future__ import annotations

import numpy as np
import torch

from qwen_edge.models.qwen2 import Qwen2ForCausalLM

from .quantized_weight import QuantizedWeight, Quantizer


class OpenVINOGraphError(ValueError):
    """The model cannot be built as an OpenVINO graph here."""


class _Ops:
    """The weights and the few helpers every layer part below uses."""

    def __init__(self, model: Qwen2ForCausalLM, fp16: bool, quantizer: Quantizer | None = None):
        import openvino.opset13 as ops

        if quantizer is not None and not fp16:
            raise OpenVINOGraphError("quantized weights are decompressed to fp16: build with fp16=True")
        self.ops, self.cfg, self.fp16, self.quantizer = ops, model.config, fp16, quantizer
        self.sd = model.state_dict()  # detached tensors, or a LazyWeights reading each on access

    def matrix(self, name: str):
        """A [out, in] weight (or the embedding table) as a constant, quantized when the quantizer says so."""
        t = self.sd[name]
        q = self.quantizer(name, t) if self.quantizer is not None else None
        return self.weight(name, t) if q is None else _decompressed(_integer_weight(self.ops, name, q, t.shape), name)

    def weight(self, name: str, t: torch.Tensor):
        # Shares the tensor's memory (the constant keeps the array alive): no second copy of the model.
        array = t.to(torch.float16 if self.fp16 else torch.float32).contiguous().numpy()
        node = self.ops.constant(array, shared_memory=True, name=name)
        return _decompressed(node) if self.fp16 else node

    def const(self, value, dtype=np.int64):
        return self.ops.constant(np.array(value, dtype))

    def linear(self, x, prefix: str, bias: bool = False):
        ops, sd = self.ops, self.sd
        y = ops.matmul(x, self.matrix(f"{prefix}.weight"), False, True, name=f"{prefix}/MatMul")
        return ops.add(y, self.weight(f"{prefix}.bias", sd[f"{prefix}.bias"]), name=f"{prefix}/Add") if bias else y

    def rms_norm(self, x, prefix: str):
        ops, const = self.ops, self.const
        var = ops.reduce_mean(ops.power(x, const(2.0, np.float32)), const([-1]), True)
        inv = ops.divide(const(1.0, np.float32), ops.sqrt(ops.add(var, const(self.cfg.rms_norm_eps, np.float32))))
        return ops.multiply(
            ops.multiply(x, inv), self.weight(f"{prefix}.weight", self.sd[f"{prefix}.weight"]), name=prefix
        )


def _attention(o: _Ops, i: int, x, cos, sin, mask, pasts, cache_position):
    """(attention output [b, t, hidden], present key, present value) of layer i."""
    ops, const, cfg = o.ops, o.const, o.cfg
    d, n_q, n_kv, p = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads, f"model.layers.{i}"

    def heads(y, n):  # [b, t, n * d] -> [b, n, t, d]
        return ops.transpose(ops.reshape(y, const([0, 0, n, d]), True), const([0, 2, 1, 3]))

    def rope(y):
        first = ops.slice(y, const([0]), const([d // 2]), const([1]), const([3]))
        second = ops.slice(y, const([d // 2]), const([d]), const([1]), const([3]))
        rotated = ops.concat([ops.negative(second), first], -1)
        return ops.add(ops.multiply(y, cos), ops.multiply(rotated, sin))

    def repeat_kv(y):  # [b, kv, s, d] -> [b, q, s, d], the GQA form the plugins fold into attention
        if n_q == n_kv:
            return y
        y = ops.broadcast(ops.unsqueeze(y, const(2)), const([1, 1, n_q // n_kv, 1, 1]), broadcast_spec="bidirectional")
        return ops.reshape(y, const([0, n_q, -1, d]), True)

    q = rope(heads(o.linear(x, f"{p}.self_attn.q_proj", True), n_q))
    k = rope(heads(o.linear(x, f"{p}.self_attn.k_proj", True), n_kv))
    v = heads(o.linear(x, f"{p}.self_attn.v_proj", True), n_kv)
    if cache_position is not None:  # written into their slots; the cache keeps its size
        k = ops.scatter_update(pasts[2 * i], cache_position, k, const(2), name=f"{p}.self_attn/present_key")
        v = ops.scatter_update(pasts[2 * i + 1], cache_position, v, const(2), name=f"{p}.self_attn/present_value")
    else:
        k = ops.concat([pasts[2 * i], k], 2, name=f"{p}.self_attn/present_key")
        v = ops.concat([pasts[2 * i + 1], v], 2, name=f"{p}.self_attn/present_value")
    attn = ops.scaled_dot_product_attention(q, repeat_kv(k), repeat_kv(v), mask, name=f"{p}.self_attn/SDPA")
    attn = ops.reshape(ops.transpose(attn, const([0, 2, 1, 3])), const([0, 0, n_q * d]), True)
    return o.linear(attn, f"{p}.self_attn.o_proj"), k, v


def _mlp(o: _Ops, x, prefix: str):
    """swish(gate) * up, then down."""
    ops = o.ops
    return o.linear(
        ops.multiply(ops.swish(o.linear(x, f"{prefix}.gate_proj")), o.linear(x, f"{prefix}.up_proj")),
        f"{prefix}.down_proj",
    )


def _moe(o: _Ops, i: int, x):
    """Qwen2-MoE's block, dense as our torch module computes it: every expert runs, weighted by a
    routing matrix that is zero where an expert was not chosen (exact; num_experts / top_k times
    the expert compute of a sparse kernel).

        probs   = softmax(MatMul(x, Wrouter))           [b, t, e], f32
        routing = scatter(zeros, topk(probs).indices, topk values (renormalized if norm_topk_prob))
        y_e     = MatMul(swish(x Wg_e) * x Wu_e, Wd_e)   all experts at once: [e, b*t, h]
        out     = sum_e routing[..., e] * y_e  (+ sigmoid(x Wsg) * MLP_shared(x))
    """
    ops, const, cfg, sd, p = o.ops, o.const, o.cfg, o.sd, f"model.layers.{i}.mlp"
    h, e, k = cfg.hidden_size, cfg.num_experts, cfg.num_experts_per_tok
    probs = ops.softmax(o.linear(x, f"{p}.gate"), -1)
    top = ops.topk(probs, const(k), -1, "max", "value", "i64")
    values = top.output(0)
    if cfg.norm_topk_prob:
        values = ops.divide(values, ops.reduce_sum(values, const([-1]), True))
    routing = ops.scatter_elements_update(ops.multiply(probs, const(0.0, np.float32)), top.output(1), values, const(-1))
    rows = ops.tile(ops.reshape(x, const([1, -1, h]), False), const([e, 1, 1]))  # [e, b*t, h]: a batch per expert
    gate_up = ops.matmul(rows, o.weight(f"{p}.experts.gate_up_proj", sd[f"{p}.experts.gate_up_proj"]), False, True)
    gate, up = ops.split(gate_up, const(-1), 2).outputs()  # [e, b*t, i] each
    y = ops.matmul(
        ops.multiply(ops.swish(gate), up), o.weight(f"{p}.experts.down_proj", sd[f"{p}.experts.down_proj"]), False, True
    )
    weights = ops.unsqueeze(ops.transpose(ops.reshape(routing, const([-1, e]), False), const([1, 0])), const(-1))
    routed = ops.reshape(ops.reduce_sum(ops.multiply(y, weights), const([0]), False), ops.shape_of(x), False)
    if not cfg.shared_expert_intermediate_size:
        return routed
    shared = ops.multiply(ops.sigmoid(o.linear(x, f"{p}.shared_expert_gate")), _mlp(o, x, f"{p}.shared_expert"))
    return ops.add(routed, shared)


def build(model: Qwen2ForCausalLM, fp16: bool = True, capacity: int | None = None, quantizer: Quantizer | None = None):
    """The stateless ov.Model of `model`; weights fp16 (decompressed by Convert) or fp32.

    `capacity` selects the static cache layout (the NPU's): batch 1, past_key_values.* of
    `capacity` slots, a `cache_position` [t] input naming the slots the new tokens are written
    to, and `attention_mask` covering all slots; the window t stays symbolic until reshaped."""
    import openvino as ov

    o = _Ops(model, fp16, quantizer)
    ops, const, cfg = o.ops, o.const, o.cfg

    def param(name, shape, dtype):
        p = ops.parameter(ov.PartialShape(shape), dtype, name=name)
        p.output(0).get_tensor().set_names({name})
        return p

    batch, slots = (1, capacity) if capacity else (-1, -1)
    ids = param("input_ids", [batch, -1], ov.Type.i64)
    mask_in = param("attention_mask", [batch, slots], ov.Type.i64)
    pos = param("position_ids", [batch, -1], ov.Type.i64)
    pasts = [
        param(f"past_key_values.{i}.{kind}", [batch, cfg.num_key_value_heads, slots, cfg.head_dim], ov.Type.f32)
        for i in range(cfg.num_hidden_layers)
        for kind in ("key", "value")
    ]
    cache_position = param("cache_position", [-1], ov.Type.i64) if capacity else None

    table = o.matrix("model.embed_tokens.weight")
    x = ops.gather(table, ids, const(0), name="model.embed_tokens/Gather")

    # cos / sin [b, 1, t, d], shared by all layers (YaRN scales them)
    inv_freq = model.inv_freq.float().numpy().reshape(1, 1, -1)
    freqs = ops.multiply(ops.unsqueeze(ops.convert(pos, ov.Type.f32), const(-1)), const(inv_freq, np.float32))
    emb = ops.unsqueeze(ops.concat([freqs, freqs], -1), const(1))
    cos, sin = ops.cos(emb), ops.sin(emb)
    if model.rope_scale != 1.0:
        scale = const(model.rope_scale, np.float32)
        cos, sin = ops.multiply(cos, scale), ops.multiply(sin, scale)

    # additive mask [b, 1, t, keys]: query i sits at slot keys - t + i (static: cache_position[i]);
    # finfo.min as our torch model
    keys = ops.gather(ops.shape_of(mask_in), const(1), const(0))
    k_slots = ops.range(const(0), keys, const(1), "i64")
    if capacity:
        q_slots = ops.unsqueeze(cache_position, const(1))
    else:
        t = ops.gather(ops.shape_of(ids), const(1), const(0))
        q_slots = ops.unsqueeze(ops.range(ops.subtract(keys, t), keys, const(1), "i64"), const(1))
    causal = ops.less_equal(ops.unsqueeze(k_slots, const(0)), q_slots)  # [t, keys]
    padded = ops.unsqueeze(ops.not_equal(mask_in, const(0)), const([1, 2]))  # [b, 1, 1, keys]
    allowed = ops.logical_and(padded, causal)
    mask = ops.select(allowed, const(0.0, np.float32), const(np.finfo(np.float32).min, np.float32))

    presents = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        a, k, v = _attention(o, i, o.rms_norm(x, f"{p}.input_layernorm"), cos, sin, mask, pasts, cache_position)
        presents += [k, v]
        x = ops.add(x, a)
        m = o.rms_norm(x, f"{p}.post_attention_layernorm")
        x = ops.add(x, _moe(o, i, m) if cfg.is_moe_layer(i) else _mlp(o, m, f"{p}.mlp"))

    x = o.rms_norm(x, "model.norm")
    if cfg.tie_word_embeddings:  # one table for both ends, as the checkpoint stores it
        logits = ops.matmul(x, table, False, True, name="lm_head/MatMul")
    else:
        logits = o.linear(x, "lm_head")
    results = [ops.result(logits, name="logits")]
    results[0].output(0).get_tensor().set_names({"logits"})
    for i, node in enumerate(presents):
        name = f"present.{i // 2}.{('key', 'value')[i % 2]}"
        node.output(0).get_tensor().set_names({name})
        results.append(ops.result(node, name=name))
    inputs = [ids, mask_in, pos, *pasts, *([cache_position] if capacity else [])]
    return ov.Model(results, inputs, "qwen2")


def _decompressed(f16_constant, name: str | None = None):
    """f16_constant -> Convert(f32) marked as weight decompression. Without the mark the plugins
    fold the Convert and run on fp32 weights (2x the bytes per token); Python cannot set the mark,
    so it is taken from OpenVINO's own fp16 compression of a one-element stand-in."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    from openvino._offline_transformations import compress_model_transformation

    stand_in = ov.Model([ops.result(ops.constant(np.zeros(1, np.float32)))], [])
    compress_model_transformation(stand_in)
    convert = stand_in.get_results()[0].input_value(0).get_node()
    convert.set_arguments([f16_constant.output(0)])
    convert.validate_and_infer_types()
    convert.set_friendly_name(f"{name or f16_constant.get_friendly_name()}/Convert")
    return convert.output(0)


def _integer_weight(ops, name: str, q: QuantizedWeight, shape):
    """NNCF's decompression subgraph, fp16 out: (Convert(values) - Convert(zero point)) * scale,
    reshaped from groups back to [out, in]; the plugins fuse it into the MatMul or Gather."""
    import openvino as ov

    kind = {(4, False): ov.Type.u4, (4, True): ov.Type.i4, (8, False): ov.Type.u8, (8, True): ov.Type.i8}
    dtype = kind[(q.bits, q.zero_point is None)]
    values = ops.convert(_integer_constant(ops, q.values, dtype, name), ov.Type.f16)
    if q.zero_point is not None:
        zp = ops.convert(_integer_constant(ops, q.zero_point, dtype, f"{name}/zero_point"), ov.Type.f16)
        values = ops.subtract(values, zp, name=f"{name}/zero_point/subtract")
    y = ops.multiply(values, ops.constant(q.scale.astype(np.float16), name=f"{name}/scale"), name=f"{name}/fq_weights")
    if q.values.ndim == 3:
        y = ops.reshape(y, ops.constant(np.array(shape, np.int64)), False)
    return y.output(0).get_node()


def _integer_constant(ops, values: np.ndarray, dtype, name: str):
    """A u8 / i8 constant, or a u4 / i4 one packed two values per byte, low nibble first. (OpenVINO's
    own constant(..., dtype=u4) goes through a Python list: 9 s and 1.8 GB for the 1.5B's table.)"""
    import openvino as ov

    if dtype not in (ov.Type.u4, ov.Type.i4):
        return ops.constant(values, dtype=dtype, name=name)
    nibbles = values.reshape(-1).astype(np.uint8) & 15  # i4: the two's complement nibble
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    tensor = ov.Tensor(dtype, ov.Shape(list(values.shape)))
    tensor.data[:] = nibbles[0::2] | (nibbles[1::2] << 4)
    return ops.constant(tensor, shared_memory=True, name=name)
