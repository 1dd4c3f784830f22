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
    h    = MatMul(silu(MatMul(x, Wg)) * MatMul(x, Wu), Wd)

Beside model.onnx (logits of every position: what onnxruntime-genai and the evaluation read),
model_last_logits.onnx is the same graph over the same weights file with the lm_head fed only
the last position: what our runtime runs (the vocabulary-wide MatMul is a third of a 0.5B
model's prefill compute otherwise).

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

OPSET = 20  # below 21, NNCF compresses MatMul weights to ONNX Runtime's MatMulNBits
IR_VERSION = 10  # onnx 1.23 writes 14; onnxruntime-web 1.30 (the mobile demo's) reads up to 13
MS = "com.microsoft"


class OrtGraphError(ValueError):
    """The model cannot be laid out on ONNX Runtime's fused kernels."""


def build(model: Qwen2ForCausalLM, path: Path, context_length: int | None = None) -> dict:
    """Write `path` (+ `path`.data); return the io spec. Weights stored in the model's dtype."""
    cfg = model.config
    if cfg.is_moe:
        raise OrtGraphError("the ort graph does not cover Qwen2-MoE yet; export MoE models with --graph portable")
    dtype = model.lm_head.weight.dtype
    if dtype not in (torch.float32, torch.float16):
        raise OrtGraphError(f"the ort graph stores fp32 or fp16 weights, not {dtype}")
    elem = TensorProto.FLOAT if dtype == torch.float32 else TensorProto.FLOAT16
    context_length = context_length or cfg.max_position_embeddings
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    nodes, inits = [], []

    def node(op, name, inputs, n_out=1, domain="", **attrs):
        outputs = [f"{name}/output_{i}" for i in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0] if n_out == 1 else outputs

    with ExternalData(path.parent / (path.name + ".data")) as data:

        def weight(name, tensor):
            inits.append(data.tensor(name, tensor.contiguous().numpy()))
            return name

        def const(name, array):
            inits.append(
                helper.make_tensor(
                    name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, array.flatten().tolist()
                )
            )
            return name

        one = const("/model/constants/INT64/[1]", np.array([1], np.int64))
        # seqlens_k = sum(mask) - 1 and total_sequence_length, as int32 (the kernel's contract)
        mask_sum = node("ReduceSum", "/model/attn_mask/ReduceSum", ["attention_mask", one], keepdims=0)
        seqlens = node(
            "Cast",
            "/model/attn_mask/seqlens_k",
            [node("Sub", "/model/attn_mask/Sub", [mask_sum, one])],
            to=TensorProto.INT32,
        )
        total = node(
            "Gather",
            "/model/attn_mask/Gather",
            [
                node("Shape", "/model/attn_mask/Shape", ["attention_mask"]),
                const("/model/constants/INT64/1", np.array(1, np.int64)),
            ],
            axis=0,
        )
        total = node("Cast", "/model/attn_mask/total_sequence_length", [total], to=TensorProto.INT32)
        freqs = torch.outer(torch.arange(context_length, dtype=torch.float32), model.inv_freq.float())
        cos = weight("cos_cache", (freqs.cos() * model.rope_scale).to(dtype))
        sin = weight("sin_cache", (freqs.sin() * model.rope_scale).to(dtype))

        eps = float(cfg.rms_norm_eps)

        def rms_norm(name, key, h, residual=None):
            """(normed, residual): SimplifiedLayerNorm(h) first, then SkipSimplifiedLayerNorm(residual + h)."""
            w = weight(key, sd[key])
            if residual is None:
                x = node(
                    "SimplifiedLayerNormalization", f"{name}/LayerNorm", [h, w], epsilon=eps, axis=-1, stash_type=1
                )
                return x, h
            x, _, _, residual = node(
                "SkipSimplifiedLayerNormalization",
                f"{name}/SkipLayerNorm",
                [residual, h, w],
                n_out=4,
                domain=MS,
                epsilon=eps,
            )
            return x, residual

        def linear(name, x, key):  # stored [in, out], as MatMul (and MatMulNBits) read it
            return node("MatMul", f"{name}/MatMul", [x, weight(key, sd[key].T)])

        embed = weight("model.embed_tokens.weight", sd["model.embed_tokens.weight"])
        h, residual = node("Gather", "/model/embed_tokens/Gather", [embed, "input_ids"]), None
        for i in range(cfg.num_hidden_layers):
            p, base = f"model.layers.{i}.", f"/model/layers.{i}"
            x, residual = rms_norm(f"{base}/input_layernorm", p + "input_layernorm.weight", h, residual)
            a = p + "self_attn."
            w_qkv = torch.cat([sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]]).T
            b_qkv = torch.cat([sd[a + "q_proj.bias"], sd[a + "k_proj.bias"], sd[a + "v_proj.bias"]])
            qkv = node("MatMul", f"{base}/attn/qkv_proj/MatMul", [x, weight(a + "qkv_proj.weight", w_qkv)])
            qkv = node("Add", f"{base}/attn/qkv_proj/Add", [qkv, weight(a + "qkv_proj.bias", b_qkv)])
            attn, _, _ = node(
                "GroupQueryAttention",
                f"{base}/attn/GroupQueryAttention",
                [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total, cos, sin],
                n_out=3,
                domain=MS,
                num_heads=cfg.num_attention_heads,
                kv_num_heads=cfg.num_key_value_heads,
                scale=float(cfg.head_dim**-0.5),
                do_rotary=1,
                rotary_interleaved=0,
                local_window_size=-1,
            )
            nodes[-1].output[1:] = [f"present.{i}.key", f"present.{i}.value"]
            o = linear(f"{base}/attn/o_proj", attn, a + "o_proj.weight")
            x, residual = rms_norm(
                f"{base}/post_attention_layernorm", p + "post_attention_layernorm.weight", o, residual
            )
            m = p + "mlp."
            gate, up = (
                linear(f"{base}/mlp/gate_proj", x, m + "gate_proj.weight"),
                linear(f"{base}/mlp/up_proj", x, m + "up_proj.weight"),
            )
            act = node("Mul", f"{base}/mlp/act_fn/Mul", [gate, node("Sigmoid", f"{base}/mlp/act_fn/Sigmoid", [gate])])
            h = linear(f"{base}/mlp/down_proj", node("Mul", f"{base}/mlp/Mul", [act, up]), m + "down_proj.weight")
        x, _ = rms_norm("/model/norm", "model.norm.weight", h, residual)
        # A tied head is stored transposed once more: MatMul (and MatMulNBits once quantized) wants [hidden, vocab].
        linear("/lm_head", x, "lm_head.weight")
        nodes[-1].output[0] = "logits"

    kv = ["batch_size", cfg.num_key_value_heads, "past_sequence_length", cfg.head_dim]
    kv_out = ["batch_size", cfg.num_key_value_heads, "total_sequence_length", cfg.head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ] + [helper.make_tensor_value_info(n, elem, kv) for n in kv_names(cfg.num_hidden_layers, "past_key_values")]
    outputs = [helper.make_tensor_value_info("logits", elem, ["batch_size", "sequence_length", cfg.vocab_size])] + [
        helper.make_tensor_value_info(n, elem, kv_out) for n in kv_names(cfg.num_hidden_layers, "present")
    ]
    graph = helper.make_graph(nodes, "qwen2", inputs, outputs, initializer=inits)
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


def write_last_logits(path: Path) -> str:
    """Write LAST_LOGITS beside `path`: its graph, reading the same external data, with a Slice to
    the last position before the node that makes the logits. Returns the file name."""
    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    head = next(i for i, n in enumerate(graph.node) if "logits" in n.output)
    for name, value in (("/model/last/starts", -1), ("/model/last/ends", 2**62), ("/model/last/axes", 1)):
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
    hidden = graph.node[head].input[0]
    names = [hidden, "/model/last/starts", "/model/last/ends", "/model/last/axes"]
    graph.node.insert(head, helper.make_node("Slice", names, ["/model/last/output_0"], name="/model/last/Slice"))
    graph.node[head + 1].input[0] = "/model/last/output_0"
    logits = next(o for o in graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = "1"
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
