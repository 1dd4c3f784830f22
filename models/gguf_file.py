"""Read a qwen2 / qwen2moe GGUF file: config from its metadata, tensors dequantized to float.

gguf-py (llama.cpp's own reader, which transformers' GGUF support also uses) parses the file and
dequantizes every block type; this module only maps llama.cpp names onto ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .qwen2 import Qwen2Config, UnsupportedModelError

GGUF_ARCHITECTURES = {"qwen2": "qwen2", "qwen2moe": "qwen2_moe"}

_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
}
# metadata key (after "<arch>.") -> config field
_CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "expert_count": "num_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size",
    "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
}


def _reader(path: Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as e:  # gguf-py raises bare ValueError / struct errors on foreign files
        raise UnsupportedModelError(f"{path} is not a readable GGUF file ({e})") from None


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_config(path: Path, reader=None) -> Qwen2Config:
    reader = reader or _reader(path)
    try:
        return _config(path, reader)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        if isinstance(e, UnsupportedModelError):
            raise
        raise UnsupportedModelError(
            f"{Path(path).name}: its metadata does not describe a Qwen2 model ({type(e).__name__}: {e})"
        ) from None


def _config(path: Path, reader) -> Qwen2Config:
    arch = _field(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{Path(path).name}: GGUF architecture {arch!r} is not supported; "
            f"qwen-edge reads {', '.join(GGUF_ARCHITECTURES)} GGUF files (Qwen2, Qwen2.5, Qwen2-MoE)"
        )
    d = {"model_type": GGUF_ARCHITECTURES[arch]}
    for key, name in _CONFIG_KEYS.items():
        value = _field(reader, f"{arch}.{key}")
        if value is not None:
            d[name] = value
    d["rms_norm_eps"] = round(float(d.get("rms_norm_eps", 1e-6)), 12)  # stored as float32: 9.99999997e-07
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise UnsupportedModelError(
            f"{Path(path).name} has no tokenizer (tokenizer.ggml.tokens): use a GGUF converted with its tokenizer"
        )
    d["vocab_size"] = len(reader.fields["tokenizer.ggml.tokens"].data)
    d["tie_word_embeddings"] = all(t.name != "output.weight" for t in reader.tensors)
    d["bos_token_id"] = _field(reader, "tokenizer.ggml.bos_token_id")
    d["eos_token_id"] = _field(reader, "tokenizer.ggml.eos_token_id")
    if _field(reader, f"{arch}.rope.scaling.type") == "yarn":
        d["rope_scaling"] = {
            "type": "yarn",
            "factor": _field(reader, f"{arch}.rope.scaling.factor"),
            "original_max_position_embeddings": _field(reader, f"{arch}.rope.scaling.original_context_length"),
        }
    return Qwen2Config.from_dict(d)


def _release(reader, tensor) -> None:
    """Drop the file's pages of a tensor already read from this process's memory (they stay in the
    page cache): the whole mapped file would otherwise count in the process's resident memory on
    top of the weights (+1.1 GB at the 1.5B Q4_K_M's peak)."""
    import mmap

    raw = getattr(reader.data, "_mmap", None)
    if raw is None or not hasattr(raw, "madvise"):
        return
    start = tensor.data_offset - tensor.data_offset % mmap.PAGESIZE
    end = min(tensor.data_offset + tensor.n_bytes, len(raw))
    try:
        raw.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError):  # not supported here: only the memory figure is worse
        pass


def read_tensors(path: Path, cfg: Qwen2Config, dtype=torch.float32, reader=None) -> dict[str, torch.Tensor]:
    """Every tensor dequantized, under this project's (transformers') names."""
    from gguf import dequantize

    reader = reader or _reader(path)
    out, experts = {}, {}
    for t in tqdm(reader.tensors, desc="dequantizing GGUF", unit="tensor", leave=False, disable=None):
        w = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)).to(dtype)
        _release(reader, t)
        if t.name in _TOP:
            out[_TOP[t.name]] = w
            continue
        _, layer, kind, suffix = t.name.split(".", 3)
        prefix = f"model.layers.{layer}"
        if kind.endswith("_exps"):  # routed experts, [experts, out, in]
            experts[(prefix, kind)] = w
        elif kind == "ffn_gate_inp_shexp":  # stored as a vector, a [1, hidden] Linear here
            out[f"{prefix}.mlp.shared_expert_gate.{suffix}"] = w.reshape(1, -1)
        elif kind in _BLOCK:
            out[f"{prefix}.{_BLOCK[kind]}.{suffix}"] = w
        else:
            raise UnsupportedModelError(f"{Path(path).name}: unexpected tensor {t.name}")
    for prefix, _ in [k for k in experts if k[1] == "ffn_down_exps"]:
        gate, up = experts[(prefix, "ffn_gate_exps")], experts[(prefix, "ffn_up_exps")]
        out[f"{prefix}.mlp.experts.gate_up_proj"] = torch.cat([gate, up], dim=1)
        out[f"{prefix}.mlp.experts.down_proj"] = experts[(prefix, "ffn_down_exps")]
    return out
