"""The Qwen2 family's shapes, to build randomly initialised models at real sizes.

Numbers are the released config.json values. Random weights serve speed and memory measurements
(and tiny ones, fast tests); accuracy is only ever claimed on real weights.
"""

from __future__ import annotations

import torch

from .qwen2 import Qwen2Config, Qwen2ForCausalLM

_COMMON = dict(model_type="qwen2", rms_norm_eps=1e-6, rope_theta=1_000_000.0, bos_token_id=151643, eos_token_id=151643)
_SMALL_VOCAB, _BIG_VOCAB = 151936, 152064

# name -> (vocab, hidden, intermediate, layers, heads, kv heads, tied, max positions)
_DENSE = {
    "Qwen2-0.5B": (_SMALL_VOCAB, 896, 4864, 24, 14, 2, True, 131072),
    "Qwen2-1.5B": (_SMALL_VOCAB, 1536, 8960, 28, 12, 2, True, 131072),
    "Qwen2-7B": (_BIG_VOCAB, 3584, 18944, 28, 28, 4, False, 131072),
    "Qwen2-72B": (_BIG_VOCAB, 8192, 29568, 80, 64, 8, False, 131072),
    "Qwen2.5-0.5B": (_SMALL_VOCAB, 896, 4864, 24, 14, 2, True, 32768),
    "Qwen2.5-1.5B": (_SMALL_VOCAB, 1536, 8960, 28, 12, 2, True, 32768),
    "Qwen2.5-3B": (_SMALL_VOCAB, 2048, 11008, 36, 16, 2, True, 32768),
    "Qwen2.5-7B": (_BIG_VOCAB, 3584, 18944, 28, 28, 4, False, 32768),
    # Tiny shapes for tests: seconds to build, trace and run; 3 layers so layer stamping is exercised.
    "tiny": (512, 64, 128, 3, 4, 2, True, 4096),
    "tiny-untied": (512, 64, 128, 3, 4, 1, False, 4096),
    "tiny-gqa3": (512, 96, 128, 3, 6, 2, False, 4096),  # 3 query heads per KV head, like 7B's 7
}

SHAPES: dict[str, dict] = {
    name: dict(
        _COMMON,
        vocab_size=v,
        hidden_size=h,
        intermediate_size=i,
        num_hidden_layers=n,
        num_attention_heads=a,
        num_key_value_heads=kv,
        tie_word_embeddings=tied,
        max_position_embeddings=pos,
        # tiny vocabularies end with their own special token
        **({"bos_token_id": v - 1, "eos_token_id": v - 1} if v < _COMMON["eos_token_id"] else {}),
    )
    for name, (v, h, i, n, a, kv, tied, pos) in _DENSE.items()
}
_MOE = dict(model_type="qwen2_moe", norm_topk_prob=False, decoder_sparse_step=1)
SHAPES["Qwen2-57B-A14B"] = dict(
    SHAPES["Qwen2-7B"],
    **_MOE,
    vocab_size=_SMALL_VOCAB,
    max_position_embeddings=32768,
    num_experts=64,
    num_experts_per_tok=8,
    moe_intermediate_size=2560,
    shared_expert_intermediate_size=20480,
)
SHAPES["tiny-moe"] = dict(
    SHAPES["tiny-untied"],
    **_MOE,
    num_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=96,
)

# What the 128K-context cards (Qwen2-7B/72B-Instruct, Qwen2.5-7B+) tell users to add to config.json.
YARN_128K = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def shape_config(name: str, **overrides) -> Qwen2Config:
    if name not in SHAPES:
        raise KeyError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    return Qwen2Config.from_dict({**SHAPES[name], **overrides})


def random_model(
    name_or_config: str | Qwen2Config, dtype=torch.float32, seed: int = 0, std: float = 0.02
) -> Qwen2ForCausalLM:
    """A model of the given shape with random weights (normal, std 0.02 as Qwen2 initialises;
    tests use a larger std so that greedy continuations vary instead of repeating one token)."""
    cfg = name_or_config if isinstance(name_or_config, Qwen2Config) else shape_config(name_or_config)
    gen = torch.Generator().manual_seed(seed)
    model = Qwen2ForCausalLM.empty(cfg, dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)
    return model


def count_parameters(cfg: Qwen2Config) -> int:
    """Parameters of a model of this config (tied embeddings counted once), without allocating."""
    with torch.device("meta"):
        return sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters())
