"""Build an N-layer ONNX graph from a 2-layer trace by stamping out layer 1 for layers 2..N-1.

Tracing cost grows with the layer count (24 to 80 identical layers in the Qwen2 family) while the
layers only differ in their weights, so we trace embedding + 2 layers + head once and copy
layer 1's nodes, renaming its values, its KV inputs / outputs and its weights. The weights are then
streamed from the torch model into one external data file, one tensor at a time.

    embed -> [layer 0] -h1-> [layer 1] -h2-> norm -> lm_head       (traced)
    embed -> [layer 0] -h1-> [layer 1] -h2-> [layer 2] -> ... -> [layer N-1] -> norm -> lm_head

Layer nodes are found by the module scope the exporter records on every node. The exporter's
optimizer folds some weights (W -> W^T) into anonymous initializers; each is matched back to its
parameter by exact bytes, and the stamp is refused (callers fall back to a full trace) if any
initializer of layer 1 cannot be explained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from .external_data import ExternalData

log = logging.getLogger(__name__)

SCOPE_KEY = "pkg.torch.onnx.name_scopes"
PREFIX = "model."  # FlatKV wraps our module as .model
SMALL_CONSTANT_BYTES = 4096


class StampError(RuntimeError):
    """The traced graph is not in a form this module can stamp safely."""


def _scopes(node) -> list[str]:
    for p in node.metadata_props:
        if p.key == SCOPE_KEY:
            return [s.strip(" '\"") for s in p.value.strip("[]").split(",")]
    return []


def _layer_of(node) -> int | None:
    for s in _scopes(node):
        parts = s.split(".")
        if len(parts) == 4 and parts[:3] == ["model", "model", "layers"]:
            return int(parts[3])
    return None


def _read(folder: Path, tensor) -> np.ndarray:
    info = ExternalDataInfo(tensor)
    with open(folder / info.location, "rb") as f:
        f.seek(info.offset or 0)
        raw = f.read(info.length)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(tensor.dims))


def _value(folder: Path, tensor) -> np.ndarray:
    return _read(folder, tensor) if uses_external_data(tensor) else onnx.numpy_helper.to_array(tensor)


def resolve_use(node, tensor, folder: Path, params: dict[str, torch.Tensor]) -> tuple[str, bool] | None:
    """The parameter (and whether transposed) that `node` reads through initializer `tensor`: one
    of the parameters of the node's own modules, innermost first. By value, not by name: the
    exporter merges identical initializers, so a layer may read another layer's tensor."""
    value = None
    for scope in reversed(_scopes(node)):
        # Below the backbone only: the backbone owns every parameter (a slow, ambiguous scan).
        if not scope.startswith(PREFIX) or scope == PREFIX + "model":
            continue
        module = scope[len(PREFIX) :] + "."
        for name, p in params.items():
            if not name.startswith(module):
                continue
            value = _value(folder, tensor) if value is None else value
            if tuple(p.shape) == value.shape and np.array_equal(p.detach().numpy(), value):
                return name, False
            if p.ndim == 2 and tuple(p.shape[::-1]) == value.shape and np.array_equal(p.detach().numpy().T, value):
                return name, True
    return None


def weight_sources(graph, folder: Path, params: dict[str, torch.Tensor]) -> dict[str, tuple[str, bool]]:
    """Initializer name -> (parameter name, transposed?) for every initializer that is a parameter
    or a folded (transposed) copy of one, matched among its first consumer's module parameters."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, node)
    sources = {}
    for t in graph.initializer:
        if t.name.startswith(PREFIX) and t.name[len(PREFIX) :] in params:
            sources[t.name] = (t.name[len(PREFIX) :], False)
            continue
        node = consumers.get(t.name)
        found = resolve_use(node, t, folder, params) if node is not None and uses_external_data(t) else None
        if found:
            sources[t.name] = found
    return sources


def stamp(traced: Path, out: Path, model, layers: int) -> None:
    """Read the 2-layer graph at `traced` (external data beside it), write the `layers`-layer graph
    to `out` with every weight streamed from `model` into `out`.data."""
    folder = traced.parent
    proto = onnx.load(traced, load_external_data=False)
    g = proto.graph
    params = dict(model.state_dict())
    sources = weight_sources(g, folder, params)
    template = [n for n in g.node if _layer_of(n) == 1]
    if not template:
        raise StampError("no layer-1 nodes found (module scopes missing)")
    inits = {t.name: t for t in g.initializer}

    # The hidden state handed from layer 0 to layer 1, and the one layer 1 hands to the norm.
    h_in = next(n.input[0] for n in template if any(s.endswith(".layers.1.input_layernorm") for s in _scopes(n)))
    internal = {o for n in template for o in n.output}
    h_out = next(i for n in g.node if _layer_of(n) is None for i in n.input if i in internal)

    def layer_name(name: str, i: int) -> str:
        return (
            name.replace("layers.1.", f"layers.{i}.")
            .replace("key_values.1.", f"key_values.{i}.")
            .replace("present.1.", f"present.{i}.")
        )

    uses = {}  # (template node index, input index) -> (layer-1 parameter, transposed)
    for j, n in enumerate(template):
        for k, name in enumerate(n.input):
            if name not in inits:
                continue
            found = resolve_use(n, inits[name], folder, params)
            t = inits[name]
            if found and ".layers.1." in found[0]:
                uses[(j, k)] = found
            elif uses_external_data(t) and ExternalDataInfo(t).length > SMALL_CONSTANT_BYTES:
                raise StampError(f"layer 1 reads initializer {name}, neither its own parameter nor a small constant")

    new_nodes, prev_out = [], h_out
    for i in range(2, layers):
        rename = {}
        for j, n in enumerate(template):
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = f"{n.name}/L{i}"
            for k, name in enumerate(n.input):
                if name == h_in:
                    copy.input[k] = prev_out
                elif name in internal:
                    copy.input[k] = rename[name]
                elif (j, k) in uses:
                    param, transposed = uses[(j, k)]
                    copy.input[k] = _folded_name(layer_name(param, i), transposed)
                elif name.startswith("past_key_values.1."):
                    copy.input[k] = layer_name(name, i)
            for k, name in enumerate(n.output):
                rename[name] = layer_name(name, i) if name.startswith("present.1.") else f"{name}/L{i}"
                copy.output[k] = rename[name]
            new_nodes.append(copy)
        prev_out = rename[h_out]
    last_template = max(k for k, n in enumerate(g.node) if _layer_of(n) == 1)
    tail = list(g.node[last_template + 1 :])
    for n in tail:
        for k, name in enumerate(n.input):
            if name == h_out:
                n.input[k] = prev_out
    nodes = list(g.node[: last_template + 1]) + new_nodes + tail
    del g.node[:]
    g.node.extend(nodes)
    _extend_io(g, layers)
    del g.value_info[:]  # stale for the stamped layers; ONNX Runtime infers shapes itself
    stamped = {  # (parameter of layer i, transposed) -> the traced initializer it stands in for
        (layer_name(param, i), transposed): inits[template[j].input[k]]
        for (j, k), (param, transposed) in uses.items()
        for i in range(2, layers)
    }
    _write_weights(g, folder, out, params, sources, stamped)
    onnx.save(proto, out)
    log.info("stamped %d layers from a 2-layer trace", layers)


def _folded_name(param: str, transposed: bool) -> str:
    return PREFIX + param + ("_t" if transposed else "")


def _extend_io(g, layers: int) -> None:
    def extend(values, kind):
        by_name = {v.name: v for v in values}
        template = [by_name[f"{kind}.1.key"], by_name[f"{kind}.1.value"]]
        head = [v for v in values if not v.name.startswith(f"{kind}.")]
        kv = [v for v in values if v.name.startswith(f"{kind}.")]
        for i in range(2, layers):
            for t in template:
                v = onnx.ValueInfoProto()
                v.CopyFrom(t)
                v.name = t.name.replace(f"{kind}.1.", f"{kind}.{i}.")
                kv.append(v)
        tail = [v for v in head if v.name == "cache_position"]
        head = [v for v in head if v.name != "cache_position"]
        del values[:]
        values.extend(head + kv + tail)

    extend(g.input, "past_key_values")
    extend(g.output, "present")


def _write_weights(g, folder: Path, out: Path, params, sources, stamped) -> None:
    """Every initializer into out.data: parameters streamed from torch one at a time (the traced
    ones under their parameter's name, the stamped layers' ones), constants copied."""
    old = {t.name: t for t in g.initializer}
    wanted = {}  # initializer name -> (param name or None, transposed, template proto)
    for name, t in old.items():
        param, transposed = sources.get(name, (None, False))
        wanted[_folded_name(param, transposed) if param else name] = (param, transposed, t)
    for (param, transposed), t in stamped.items():
        wanted.setdefault(_folded_name(param, transposed), (param, transposed, t))
    renamed = {name: _folded_name(*sources[name]) for name in sources}
    for n in g.node:
        for k, name in enumerate(n.input):
            if name in renamed:
                n.input[k] = renamed[name]
    del g.initializer[:]
    with ExternalData(out.parent / (out.name + ".data")) as data:
        for name, (param, transposed, template) in wanted.items():
            if param is not None:
                tensor = params[param].detach()
                g.initializer.append(
                    data.tensor(name, (tensor.T if transposed else tensor).contiguous().numpy(), template)
                )
            elif uses_external_data(template):
                g.initializer.append(data.tensor(name, _read(folder, template), template))
            else:  # inline constant: keep as is
                g.initializer.append(template)
