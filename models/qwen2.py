"""Qwen2 / Qwen2.5 / Qwen2-MoE in plain torch, written to be traced.

The KV cache is passed in and returned, never kept in Python state, in one of two layouts:
- dynamic: per layer (key, value) of [batch, kv_heads, past_len, head_dim]; the step returns them
  grown by the new tokens. `attention_mask` covers past + new tokens.
- static: per layer (key, value) of [batch, kv_heads, capacity, head_dim]; the new tokens are
  written at `cache_position` and the same-size cache is returned. `attention_mask` covers all
  `capacity` slots (1 where a slot holds a real token). This is what NPUs and phones need.

Parameter names are those of transformers' `Qwen2ForCausalLM` / `Qwen2MoeForCausalLM` (v5 layout:
routed experts stored fused as `experts.gate_up_proj` / `experts.down_proj`), so a checkpoint's
tensors load after `sanitize`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen2_moe")


class UnsupportedModelError(ValueError):
    """The checkpoint is not a Qwen2-family model this module can run."""


@dataclass(frozen=True)
class Qwen2Config:
    """config.json's own field names; unknown keys are ignored by `from_dict`."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    model_type: str = "qwen2"
    head_dim: int | None = None
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # Qwen2-MoE only (num_experts == 0 means a dense model).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedModelError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )

    @classmethod
    def from_dict(cls, d: dict) -> Qwen2Config:
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {model_type!r} is not supported: qwen-edge runs the Qwen2 family "
                f"({', '.join(SUPPORTED_MODEL_TYPES)}: Qwen2, Qwen2.5, Qwen2-MoE)"
            )
        if d.get("use_sliding_window"):
            raise UnsupportedModelError(
                "use_sliding_window=true is not supported (no released Qwen2 checkpoint enables it); "
                "set it to false in config.json"
            )
        d = dict(d)
        # transformers 5 writes rope settings as one `rope_parameters` dict; 4.x as two fields.
        rope = dict(d.pop("rope_parameters", None) or {})
        if "rope_theta" in rope:
            d.setdefault("rope_theta", rope.pop("rope_theta"))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default" and not d.get("rope_scaling"):
            d["rope_scaling"] = rope
        if d.get("rope_scaling"):
            kind = d["rope_scaling"].get("rope_type", d["rope_scaling"].get("type"))
            if kind not in ("yarn", "default"):
                raise UnsupportedModelError(f"rope scaling {kind!r} is not supported: Qwen2 uses plain RoPE or 'yarn'")
            if kind == "default":
                d["rope_scaling"] = None
        fields = dataclasses.fields(cls)
        required = [
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if d.get(n) is None]
        if missing:
            raise UnsupportedModelError(f"the config lacks {', '.join(missing)}: give the model's full config.json")
        wrong = [n for n in required if type(d[n]) is not int or d[n] < 1]
        if wrong:
            raise UnsupportedModelError(f"the config's {', '.join(wrong)} must be whole numbers >= 1")
        names = {f.name for f in fields}
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})

    def to_dict(self) -> dict:
        """A config.json that transformers (4.x and 5.x) reads as the same model."""
        d = dataclasses.asdict(self)
        d["architectures"] = ["Qwen2MoeForCausalLM" if self.is_moe else "Qwen2ForCausalLM"]
        if not self.is_moe:
            for k in [f.name for f in dataclasses.fields(self) if f.name.startswith(("num_experts", "moe_"))]:
                d.pop(k)
            for k in ("shared_expert_intermediate_size", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"):
                d.pop(k)
        return {k: v for k, v in d.items() if v is not None}

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, i: int) -> bool:
        return self.is_moe and i not in self.mlp_only_layers and (i + 1) % self.decoder_sparse_step == 0


def rope_inv_freq(cfg: Qwen2Config) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and the cos/sin scale: plain RoPE, or YaRN as the 128K cards set it."""
    dim, base = cfg.head_dim, cfg.rope_theta
    # device="cpu" even inside a meta-device context: a meta arange imports torch._dynamo (2 s)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim)
    if not cfg.rope_scaling:
        return 1.0 / pos_freqs, 1.0
    s = cfg.rope_scaling
    factor = s["factor"]
    original = s.get("original_max_position_embeddings") or cfg.max_position_embeddings
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1
    scale = s.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)

    def correction_dim(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), dim - 1)
    ramp = (torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / ((high - low) or 0.001)
    keep = 1 - ramp.clamp(0, 1)  # 1: high-frequency dims keep their frequency (extrapolate)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep
    return inv_freq, scale


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    # Slices, not chunk(): chunk traces to ONNX sequence ops that NPU and mobile compilers reject.
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=True)
        self.k_proj = nn.Linear(h, self.n_kv * d, bias=True)
        self.v_proj = nn.Linear(h, self.n_kv * d, bias=True)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=False)

    def forward(self, x, cos, sin, mask, past_k, past_v, cache_position):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache_position is None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        else:
            k, v = past_k.index_copy(2, cache_position, k), past_v.index_copy(2, cache_position, v)
        groups = self.n_heads // self.n_kv
        kk = k.repeat_interleave(groups, dim=1) if groups > 1 else k
        vv = v.repeat_interleave(groups, dim=1) if groups > 1 else v
        scores = (q @ kk.transpose(2, 3)) * (self.head_dim**-0.5) + mask
        probs = scores.float().softmax(-1).to(q.dtype)
        out = (probs @ vv).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(out), k, v


class MLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Experts(nn.Module):
    """Routed experts as fused 3D weights (transformers 5's layout)."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        e, h, i = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))


class Router(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))


class MoeBlock(nn.Module):
    """Top-k routed experts plus (if sized) a shared expert behind a sigmoid gate (Qwen2-57B-A14B).

    Every expert is computed and weighted by a dense routing matrix (zero where not chosen):
    exact, and traceable without data-dependent shapes, at num_experts / top_k times the
    compute of a sparse kernel.
    """

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.top_k, self.norm_topk_prob = cfg.num_experts_per_tok, cfg.norm_topk_prob
        self.gate = Router(cfg)
        self.experts = Experts(cfg)
        self.shared_expert = self.shared_expert_gate = None
        if cfg.shared_expert_intermediate_size:  # 0: routed experts only
            self.shared_expert = MLP(cfg.hidden_size, cfg.shared_expert_intermediate_size)
            self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)

    def forward(self, x):
        probs = F.linear(x, self.gate.weight).float().softmax(-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            top_p = top_p / top_p.sum(-1, keepdim=True)
        routing = torch.zeros_like(probs).scatter(-1, top_i, top_p).to(x.dtype)  # [b, t, e]
        h = torch.einsum("bth,eih->ebti", x, self.experts.gate_up_proj)
        half = h.shape[-1] // 2
        gate, up = h[..., :half], h[..., half:]
        y = torch.einsum("ebti,ehi->ebth", F.silu(gate) * up, self.experts.down_proj)
        routed = torch.einsum("bte,ebth->bth", routing, y)
        if self.shared_expert is None:
            return routed
        return routed + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)


class Block(nn.Module):
    def __init__(self, cfg: Qwen2Config, i: int):
        super().__init__()
        self.self_attn = Attention(cfg)
        moe = cfg.is_moe_layer(i)
        self.mlp = MoeBlock(cfg) if moe else MLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, past_k, past_v, cache_position):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_k, past_v, cache_position)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


class Backbone(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        # Given a tensor, Embedding skips its random init (on the meta device that init alone
        # imports torch._dynamo: 2 s); every caller loads or fills the weights anyway.
        table = torch.empty(cfg.vocab_size, cfg.hidden_size)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, _weight=table)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        inv_freq, self.rope_scale = rope_inv_freq(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @classmethod
    def empty(cls, cfg: Qwen2Config, dtype=torch.float32) -> Qwen2ForCausalLM:
        """Allocated but uninitialised weights (no time spent on init), rope buffer set."""
        with torch.device("meta"):
            model = cls(cfg)
        model.to_empty(device="cpu").to(dtype)
        return model.materialized()

    def materialized(self) -> Qwen2ForCausalLM:
        """After the parameters were replaced (to_empty, load_state_dict(assign=True)), which
        unties a tied head and leaves the rope buffer on the meta device: tie and set it again."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.inv_freq = rope_inv_freq(self.config)[0]
        return self.eval()

    def forward(self, input_ids, position_ids, attention_mask, past_key_values, cache_position=None):
        """One step: input_ids / position_ids [b, t]; attention_mask [b, keys] of 0/1;
        past_key_values a sequence of (key, value) per layer. Returns (logits [b, t, vocab],
        list of (key, value) per layer). `cache_position` [t] selects the static layout."""
        x = self.model.embed_tokens(input_ids)
        freqs = position_ids.float()[..., None] * self.inv_freq  # [b, t, head_dim / 2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [b, 1, t, head_dim]
        cos, sin = (emb.cos() * self.rope_scale).to(x.dtype), (emb.sin() * self.rope_scale).to(x.dtype)
        mask = self.additive_mask(attention_mask, input_ids.shape[1], past_key_values[0][0], cache_position, x.dtype)
        present = []
        for layer, (past_k, past_v) in zip(self.model.layers, past_key_values, strict=True):
            x, k, v = layer(x, cos, sin, mask, past_k, past_v, cache_position)
            present.append((k, v))
        return self.lm_head(self.model.norm(x)), present

    @staticmethod
    def additive_mask(attention_mask, t, past_k, cache_position, dtype):
        """[b, 1, t, keys]: 0 where query i may see key j (causal and not padding), else -inf-ish.
        Queries sit at slots past_len.. (dynamic) or at cache_position (static)."""
        keys = attention_mask.shape[1]
        if cache_position is None:
            q_slots = torch.arange(t, device=attention_mask.device) + past_k.shape[2]
        else:
            q_slots = cache_position
        k_slots = torch.arange(keys, device=attention_mask.device)
        allowed = (k_slots[None, :] <= q_slots[:, None])[None] & attention_mask[:, None, :].bool()
        # finfo.min, not -inf: a fully padded query row stays finite instead of NaN.
        return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]

    def empty_cache(self, batch: int, capacity: int = 0, dtype=None):
        """Zeroed (key, value) per layer: dynamic layout with capacity 0, static otherwise."""
        cfg = self.config
        dtype = dtype or self.lm_head.weight.dtype
        shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim)
        return [
            (torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(cfg.num_hidden_layers)
        ]


_EXPERT_PARTS = ("gate_proj", "up_proj", "down_proj")


def sanitize(weights: dict[str, torch.Tensor], cfg: Qwen2Config) -> dict[str, torch.Tensor]:
    """Map checkpoint tensor names onto this module's: per-expert MoE tensors are stacked into the
    fused layout, a tied lm_head is dropped, rotary buffers from old checkpoints are ignored."""
    out = {k: v for k, v in weights.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.mlp.experts"
        if not cfg.is_moe_layer(i) or f"{p}.0.gate_proj.weight" not in out:
            continue
        gate, up, down = ([out.pop(f"{p}.{e}.{n}.weight") for e in range(cfg.num_experts)] for n in _EXPERT_PARTS)
        out[f"{p}.gate_up_proj"] = torch.stack([torch.cat([g, u]) for g, u in zip(gate, up, strict=True)])
        out[f"{p}.down_proj"] = torch.stack(down)
    return out
