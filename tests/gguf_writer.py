"""Write our tiny random models as GGUF files (test fixtures), with llama.cpp's tensor names."""

from pathlib import Path

import gguf
import numpy as np

from qwen_edge.models.qwen2 import Qwen2ForCausalLM

# llama.cpp's tensor names (its convert_hf_to_gguf / gguf-py TENSOR_NAMES for qwen2 and qwen2moe),
# written out here rather than read from the loader's tables: a wrong mapping there must fail.
TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
BLOCK = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp",
    "mlp.shared_expert.gate_proj": "ffn_gate_shexp",
    "mlp.shared_expert.up_proj": "ffn_up_shexp",
    "mlp.shared_expert.down_proj": "ffn_down_shexp",
}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_vocab(n: int):
    """A byte-level BPE vocabulary of exactly n tokens (the GGUF's token count is the vocab size)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = ["h e", "i n", "t he"]
    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in merges]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens += [f"<|extra_{i}|>" for i in range(n - len(tokens) - len(special))] + special
    return tokens, merges, [1] * (n - 3) + [3, 3, 3]


def _writer(cfg, path: Path, arch: str):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if cfg.is_moe:
        w.add_expert_count(cfg.num_experts)
        w.add_expert_used_count(cfg.num_experts_per_tok)
        w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
        w.add_expert_shared_feed_forward_length(cfg.shared_expert_intermediate_size)
    tokens, merges, types = byte_level_vocab(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_bos_token_id(cfg.vocab_size - 3)
    w.add_eos_token_id(cfg.vocab_size - 1)
    w.add_chat_template(CHAT_TEMPLATE)
    return w


def _gguf_name(name: str) -> str:
    if name in TOP:
        return TOP[name]
    _, _, i, rest = name.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{i}.{BLOCK[module]}.{suffix}"


def write_random_gguf(cfg, path: Path, seed: int = 0, std: float = 0.02) -> Path:
    """A dense model of any size with random weights, one tensor at a time (never the whole model
    in memory): matrices Q8_0 (llama.cpp's blocks of 32 int8 values and an fp16 scale, uniform
    values of standard deviation `std`), norms ones and biases zeros in F32."""
    from qwen_edge.models.lazy import expected_shapes

    shapes = {n: s for n, s in expected_shapes(cfg).items() if not (n == "lm_head.weight" and cfg.tie_word_embeddings)}
    w = _writer(cfg, path, "qwen2")
    q8 = gguf.GGMLQuantizationType.Q8_0
    for name, shape in shapes.items():
        if len(shape) == 2:
            w.add_tensor_info(
                _gguf_name(name),
                (shape[0], shape[1] // 32 * 34),
                np.dtype(np.uint8),
                shape[0] * shape[1] // 32 * 34,
                q8,
            )
        else:
            w.add_tensor_info(_gguf_name(name), shape, np.dtype(np.float32), 4 * shape[0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    scale = np.frombuffer(np.float16(std * 3**0.5 / 127).tobytes(), np.uint8)
    for name, shape in shapes.items():
        if len(shape) == 2:
            blocks = np.empty((shape[0] * shape[1] // 32, 34), np.uint8)
            blocks[:, :2] = scale
            blocks[:, 2:] = rng.integers(-127, 128, (blocks.shape[0], 32), dtype=np.int8).view(np.uint8)
            w.write_tensor_data(blocks.reshape(shape[0], -1))
        else:
            w.write_tensor_data(
                np.ones(shape, np.float32) if name.endswith("norm.weight") else np.zeros(shape, np.float32)
            )
    w.close()
    return path


def write_gguf(model: Qwen2ForCausalLM, path: Path, arch: str = "qwen2") -> Path:
    cfg = model.config
    w = _writer(cfg, path, arch)
    for name, t in model.state_dict().items():
        a = t.detach().float().numpy()
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        rest = name.split(".", 3)[-1]
        i = name.split(".")[2] if name.startswith("model.layers.") else None
        if rest == "mlp.experts.gate_up_proj":
            gate, up = np.split(a, 2, axis=1)
            w.add_tensor(f"blk.{i}.ffn_gate_exps.weight", np.ascontiguousarray(gate))
            w.add_tensor(f"blk.{i}.ffn_up_exps.weight", np.ascontiguousarray(up))
        elif rest == "mlp.experts.down_proj":
            w.add_tensor(f"blk.{i}.ffn_down_exps.weight", a)
        elif rest == "mlp.shared_expert_gate.weight":
            w.add_tensor(f"blk.{i}.ffn_gate_inp_shexp.weight", a.reshape(-1))
        else:
            w.add_tensor(_gguf_name(name), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
