"""Our Qwen2 / Qwen2-MoE definition against transformers' own, on tiny random configs."""

import pytest
import torch
import transformers

from qwen_edge.models.qwen2 import Qwen2ForCausalLM
from qwen_edge.models.shapes import YARN_128K, random_model, shape_config

TOL = 1e-4

CONFIGS = {
    "tied, 4/2 heads": ("tiny", {}),
    "untied, 4/1 heads": ("tiny-untied", {}),
    "untied, 6/6 heads": ("tiny-untied", dict(num_attention_heads=6, num_key_value_heads=6, hidden_size=96)),
    "tied, 8/2 heads": ("tiny", dict(num_attention_heads=8, num_key_value_heads=2, hidden_size=128)),
    "yarn rope": ("tiny", dict(rope_scaling=dict(YARN_128K, original_max_position_embeddings=64))),
    "moe + shared expert": ("tiny-moe", {}),
    "moe, no shared expert": ("tiny-moe", dict(shared_expert_intermediate_size=0)),
    "moe, normalised top-k, dense layer 0": ("tiny-moe", dict(norm_topk_prob=True, mlp_only_layers=[0])),
}


def hf_twin(ours: Qwen2ForCausalLM):
    cfg = ours.config
    config_cls = transformers.Qwen2MoeConfig if cfg.is_moe else transformers.Qwen2Config
    model_cls = transformers.Qwen2MoeForCausalLM if cfg.is_moe else transformers.Qwen2ForCausalLM
    hf_cfg = config_cls(**cfg.to_dict())
    hf_cfg._attn_implementation = "eager"
    hf = model_cls(hf_cfg).eval()
    result = hf.load_state_dict(ours.state_dict(), strict=False)
    # transformers builds a zero-width shared expert (times a gate) where ours has none.
    if cfg.is_moe and cfg.shared_expert_intermediate_size == 0:
        assert all("shared_expert" in k for k in result.missing_keys), result
    else:
        assert not result.missing_keys
    assert not result.unexpected_keys
    return hf


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def pair(request):
    name, overrides = CONFIGS[request.param]
    ours = random_model(shape_config(name, **overrides), seed=1)
    return ours, hf_twin(ours)


def run_steps(model, ids, mask, position_ids, split, capacity=0):
    """Prefill ids[:, :split], then one token at a time; logits of every position, [b, t, v]."""
    b, t = ids.shape
    cache = model.empty_cache(b, capacity)
    out, start = [], 0
    for stop in [split, *range(split + 1, t + 1)]:
        if capacity:
            step_mask, slots = mask[:, :capacity].clone(), torch.arange(start, stop)
            step_mask[:, stop:] = 0  # slots not written yet
            logits, cache = model(ids[:, start:stop], position_ids[:, start:stop], step_mask, cache, slots)
        else:
            logits, cache = model(ids[:, start:stop], position_ids[:, start:stop], mask[:, :stop], cache)
        out.append(logits)
        start = stop
    return torch.cat(out, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("layout", ["dynamic", "static"])
def test_prefill_then_decode_matches_transformers(pair, layout):
    ours, hf = pair
    ids = torch.randint(0, ours.config.vocab_size, (1, 11), generator=torch.Generator().manual_seed(0))
    mask, pos = torch.ones_like(ids), torch.arange(11)[None]
    ref = hf(input_ids=ids).logits
    capacity = 16 if layout == "static" else 0
    mask = torch.ones(1, max(capacity, 11), dtype=torch.long)
    got = run_steps(ours, ids, mask, pos, split=6, capacity=capacity)
    assert (got - ref).abs().max().item() <= TOL


@torch.no_grad()
@pytest.mark.parametrize("layout", ["dynamic", "static"])
def test_batch_of_two_with_left_padding(pair, layout):
    ours, hf = pair
    vocab = ours.config.vocab_size
    ids = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # row 1 is a 6-token prompt, left-padded
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    ref = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    capacity = 12 if layout == "static" else 0
    full_mask = torch.cat([mask, torch.ones(2, capacity - 10, dtype=torch.long)], 1) if capacity else mask
    got = run_steps(ours, ids, full_mask, pos, split=7, capacity=capacity)
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max().item() <= TOL
    # Padding must not leak into the real tokens: row 1 alone gives the same logits.
    alone = hf(input_ids=ids[1:, 4:]).logits[0]
    assert (got[1, 4:] - alone).abs().max().item() <= TOL


def test_yarn_is_really_applied():
    plain = random_model("tiny")
    yarn = random_model(shape_config("tiny", rope_scaling=dict(YARN_128K, original_max_position_embeddings=64)))
    assert yarn.rope_scale > 1.0
    assert not torch.allclose(plain.inv_freq, yarn.inv_freq)
    assert transformers.Qwen2Config(**yarn.config.to_dict()).rope_parameters["rope_type"] == "yarn"


def test_tied_embedding_is_one_tensor():
    model = random_model("tiny")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert random_model("tiny-untied").lm_head.weight is not random_model("tiny-untied").model.embed_tokens.weight
