"""Trace our Qwen2 module into ONNX with the KV cache as explicit inputs and outputs.

I/O names follow optimum's convention, so its ORTModelForCausalLM and other tools find them:
    input_ids, attention_mask, position_ids, past_key_values.{i}.key|value
        -> logits, present.{i}.key|value
KV tensors are [batch, kv_heads, length, head_dim].

Graphs:
- portable: standard ONNX ops, dynamic batch / sequence / past length; present = past + new.
- static: every dimension fixed (batch 1, `max_prompt` tokens per call, `max_context` KV slots);
  an extra `cache_position` [max_prompt] input says which slots the new tokens are written to, and
  present has the same shape as past. For the Intel NPU and mobile runtimes. With max_prompt=0
  the tokens per call stay symbolic ("sequence") and only the KV capacity is fixed: one graph that
  is later fixed to a prefill window and to one-token decode without tracing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from qwen_edge.models.qwen2 import Qwen2ForCausalLM

log = logging.getLogger(__name__)

GRAPHS = ("portable", "static")
OPSET = 18
# Over this the protobuf limit forces weights out of model.onnx into one model.onnx.data file.
EXTERNAL_DATA_BYTES = 1_800_000_000


def kv_names(layers: int, kind: str) -> list[str]:
    return [f"{kind}.{i}.{part}" for i in range(layers) for part in ("key", "value")]


class FlatKV(nn.Module):
    """Our model with the per-layer (key, value) pairs flattened into one list each way."""

    def __init__(self, model: Qwen2ForCausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, past, cache_position=None):
        pairs = list(zip(past[0::2], past[1::2], strict=True))
        logits, present = self.model(input_ids, position_ids, attention_mask, pairs, cache_position)
        return logits, [t for kv in present for t in kv]


def io_spec(model: Qwen2ForCausalLM, graph: str, max_prompt: int = 0, max_context: int = 0) -> dict:
    """Names and shapes (ints, or symbolic names for dynamic dims) of the graph's inputs and outputs.
    For the static graph `max_prompt` is the number of tokens per call (1 for the decode graph)."""
    cfg = model.config
    kv, h = cfg.num_key_value_heads, cfg.head_dim
    if graph == "static":
        tokens, keys = [1, max_prompt or "sequence"], [1, max_context]
        past = present = [1, kv, max_context, h]
    else:
        tokens, keys = ["batch", "sequence"], ["batch", "past_sequence + sequence"]
        past, present = ["batch", kv, "past_sequence", h], ["batch", kv, "past_sequence + sequence", h]
    # Order matters: the exporter names the inputs in FlatKV.forward's order.
    inputs = {"input_ids": tokens, "attention_mask": keys, "position_ids": tokens}
    inputs.update({name: past for name in kv_names(cfg.num_hidden_layers, "past_key_values")})
    if graph == "static":
        inputs["cache_position"] = tokens[1:]
    outputs = {"logits": [*tokens, cfg.vocab_size]}
    outputs.update({name: present for name in kv_names(cfg.num_hidden_layers, "present")})
    dtypes = {"input_ids": "int64", "attention_mask": "int64", "position_ids": "int64", "cache_position": "int64"}
    return {"inputs": inputs, "outputs": outputs, "dtypes": dtypes, "kv_layout": "[batch, kv_heads, length, head_dim]"}


def trace(
    model: Qwen2ForCausalLM,
    path: Path,
    graph: str = "portable",
    max_prompt: int = 0,
    max_context: int = 0,
    external_data: bool | None = None,
):
    """Write `path` (and `path`.data when the weights need it, or when asked); return its io_spec."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    cfg, dtype = model.config, model.lm_head.weight.dtype
    layers = cfg.num_hidden_layers
    if graph == "static":
        past = model.empty_cache(1, max_context, dtype)
        n = max_prompt or 3  # an example size other than 0 / 1 keeps a symbolic window symbolic
        args = (
            torch.zeros(1, n, dtype=torch.long),
            torch.ones(1, max_context, dtype=torch.long),
            torch.arange(n)[None],
            [t for kv in past for t in kv],
            torch.arange(n),
        )
        dynamic_shapes = None
        if not max_prompt:
            window = torch.export.Dim("sequence", max=max_context)
            dynamic_shapes = ({1: window}, None, {1: window}, [None] * (2 * layers), {0: window})
    else:
        # Example sizes other than 0 / 1 so torch.export keeps the dimensions symbolic.
        b, t, p = 2, 3, 4
        # Distinct tensors: torch.export treats aliased example inputs as one input.
        past = [torch.zeros(b, cfg.num_key_value_heads, p, cfg.head_dim, dtype=dtype) for _ in range(2 * layers)]
        args = (
            torch.zeros(b, t, dtype=torch.long),
            torch.ones(b, p + t, dtype=torch.long),
            torch.arange(p, p + t)[None].expand(b, t).clone(),
            past,
        )
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        past_len, keys = torch.export.Dim("past_sequence"), torch.export.Dim("keys")
        dynamic_shapes = (
            {0: batch, 1: seq},
            {0: batch, 1: keys},
            {0: batch, 1: seq},
            [{0: batch, 2: past_len}] * (2 * layers),
        )
    spec = io_spec(model, graph, max_prompt, max_context)
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    if _stampable(model.config):
        from .stamp import StampError, stamp

        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".trace-") as tmp:
            short = Path(tmp) / "short.onnx"
            _export(first_layers(model, 2), _args_for(args, 2), _shapes_for(dynamic_shapes, 2), short, True)
            try:
                stamp(short, path, model, layers)
                return spec
            except StampError as e:
                log.warning("falling back to a full trace: %s", e)
    _export(model, args, dynamic_shapes, path, external_data)
    return spec


def _stampable(cfg) -> bool:
    """Layers 1..N-1 identical in structure (layer 0 may differ: mlp_only_layers=[0])."""
    return cfg.num_hidden_layers > 2 and len({cfg.is_moe_layer(i) for i in range(1, cfg.num_hidden_layers)}) == 1


def first_layers(model: Qwen2ForCausalLM, n: int) -> Qwen2ForCausalLM:
    """The same model cut to its first n layers, sharing every tensor (nothing is copied)."""
    with torch.device("meta"):
        short = Qwen2ForCausalLM(dataclasses.replace(model.config, num_hidden_layers=n))
    short.model.embed_tokens, short.model.norm, short.lm_head = (
        model.model.embed_tokens,
        model.model.norm,
        model.lm_head,
    )
    short.model.layers = nn.ModuleList(model.model.layers[:n])
    short.inv_freq, short.rope_scale = model.inv_freq, model.rope_scale
    return short.eval()


def _args_for(args, layers):
    return (*args[:3], args[3][: 2 * layers], *args[4:])


def _shapes_for(dynamic_shapes, layers):
    return (
        None if dynamic_shapes is None else (*dynamic_shapes[:3], dynamic_shapes[3][: 2 * layers], *dynamic_shapes[4:])
    )


def _export(model, args, dynamic_shapes, path: Path, external_data: bool) -> None:
    layers = model.config.num_hidden_layers
    spec_names = ["input_ids", "attention_mask", "position_ids", *kv_names(layers, "past_key_values")]
    if len(args) == 5:
        spec_names.append("cache_position")
    log.info("tracing %d layers", layers)
    # The exporter warns about every torchvision op it cannot register (torchvision is not installed).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        program = torch.onnx.export(
            FlatKV(model).eval(),
            args,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=spec_names,
            output_names=["logits", *kv_names(layers, "present")],
            opset_version=OPSET,
            verbose=False,
        )
    log.info("saving %s", path.name)
    program.save(path, external_data=external_data)


def share_weights(main: Path, other: Path) -> int:
    """Point `other`'s external initializers at byte-identical tensors in `main`'s data file, so two
    graphs of one model (static prefill and decode) store the weights once. Returns bytes saved."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    def external(model):
        return {t.name: t for t in model.graph.initializer if uses_external_data(t)}

    def same_bytes(folder, a, b, block=1 << 24):
        """Compare two stored tensors block by block: never two 0.5 GB embeddings in memory."""
        if a.length != b.length:
            return False
        with open(folder / a.location, "rb") as fa, open(folder / b.location, "rb") as fb:
            fa.seek(a.offset or 0)
            fb.seek(b.offset or 0)
            left = a.length
            while left > 0:
                n = min(block, left)
                if fa.read(n) != fb.read(n):
                    return False
                left -= n
        return True

    folder = main.parent
    main_tensors = external(onnx.load(main, load_external_data=False))
    other_model = onnx.load(other, load_external_data=False)
    saved = 0
    for name, tensor in external(other_model).items():
        mine = ExternalDataInfo(tensor)
        theirs = ExternalDataInfo(main_tensors[name]) if name in main_tensors else None
        if theirs and same_bytes(folder, theirs, mine):
            del tensor.external_data[:]
            for key, value in (("location", theirs.location), ("offset", theirs.offset), ("length", theirs.length)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value or 0)
            saved += mine.length
    referenced = {ExternalDataInfo(t).location for t in external(other_model).values()}
    onnx.save(other_model, other)
    if f"{other.name}.data" not in referenced:
        (folder / f"{other.name}.data").unlink(missing_ok=True)
    return saved
