"""SmoothQuant-style smoothing (Xiao et al. 2023) of our torch Qwen2 model, before an INT8 export.

Dynamic INT8 quantizes activations per tensor: a few outlier channels set the scale and the rest
lose precision. Smoothing moves that range into the weights, where per-channel quantization absorbs
it: for a linear y = x W and input channel j, s_j = max|x_j|^alpha / max|W_j|^(1 - alpha); the op
before divides channel j by s_j and W's input row j is multiplied by it — folded exactly into the
RMSNorm weights (q/k/v, gate/up), v_proj's output rows (o_proj; query heads sharing a KV head share
their scales), up_proj's output rows (down_proj) and, untied, the lm_head (final norm). The model
computes the same function afterwards (tested). Measured on the real 0.5B: alpha 0.7 best
(benchmarks/RESULTS.md); down_proj's inputs keep outliers that no alpha fixes, so the mobile recipe
leaves it out of INT8 (quantize/onnx_int8.py).
"""

from __future__ import annotations

import dataclasses

import torch

ALPHA = 0.7


def activation_maxima(model, token_windows) -> dict[str, torch.Tensor]:
    """Per input channel, the largest |activation| reaching each Linear."""
    maxima, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):

            def hook(mod, args, name=name):
                seen = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
                maxima[name] = torch.maximum(maxima[name], seen) if name in maxima else seen

            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for ids in token_windows:
            ids = torch.tensor([ids])
            pos = torch.arange(ids.shape[1])[None]
            model(ids, pos, torch.ones_like(ids), model.empty_cache(1))
    for h in hooks:
        h.remove()
    return maxima


def _scales(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0)  # per input channel
    return (act_max.clamp(min=1e-5) ** alpha / w_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


def smooth(model, maxima: dict, alpha: float = ALPHA, alpha_down: float | None = None) -> None:
    """Fold SmoothQuant scales into the weights, in place (the function computed is unchanged).
    MoE layers keep their experts as they are (only attention is smoothed there)."""
    cfg = model.config
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            p, attn, mlp = f"model.layers.{i}", layer.self_attn, layer.mlp
            s = _scales(
                maxima[f"{p}.self_attn.q_proj"], [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], alpha
            )
            layer.input_layernorm.weight.div_(s)
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
                lin.weight.mul_(s)
            # o_proj's input channel (head h, dim d) is v's output (kv head h // group, dim d)
            d = cfg.head_dim
            act = maxima[f"{p}.self_attn.o_proj"].reshape(cfg.num_key_value_heads, group, d).amax(1)
            w = attn.o_proj.weight.abs().amax(0).reshape(cfg.num_key_value_heads, group, d).amax(1)
            s_kv = (act.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)  # [kv, d]
            attn.v_proj.weight.div_(s_kv.reshape(-1, 1))
            attn.v_proj.bias.div_(s_kv.reshape(-1))
            attn.o_proj.weight.mul_(s_kv[:, None, :].expand(-1, group, -1).reshape(1, -1))
            if cfg.is_moe_layer(i):
                continue
            s = _scales(maxima[f"{p}.mlp.gate_proj"], [mlp.gate_proj.weight, mlp.up_proj.weight], alpha)
            layer.post_attention_layernorm.weight.div_(s)
            for lin in (mlp.gate_proj, mlp.up_proj):
                lin.weight.mul_(s)
            s = _scales(maxima[f"{p}.mlp.down_proj"], [mlp.down_proj.weight], alpha_down or alpha)
            mlp.up_proj.weight.div_(s.reshape(-1, 1))
            mlp.down_proj.weight.mul_(s)


def smooth_head(model, maxima: dict, alpha: float = ALPHA) -> None:
    """The final RMSNorm into the lm_head, untying a tied head first (the ort graph stores the
    head as its own transposed copy anyway; the embedding table keeps the original rows)."""
    with torch.no_grad():
        if model.lm_head.weight is model.model.embed_tokens.weight:
            model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
            model.config = dataclasses.replace(model.config, tie_word_embeddings=False)
        s = _scales(maxima["lm_head"], [model.lm_head.weight], alpha)
        model.model.norm.weight.div_(s)
        model.lm_head.weight.mul_(s)
