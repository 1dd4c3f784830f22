"""The Intel NPU's rules, checked on an export folder before anyone compiles it on an NPU.

Intel's NPU compiles static graphs only, and runs LLM weights well as symmetric INT4 with group
size 128 or one scale per output channel. Users otherwise find out at compile time, or from garbled
output. Each check returns violations in words; an empty list means the folder conforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qwen_edge.runtime.manifest import Manifest, read

from .openvino_ir import read_ir


@dataclass(frozen=True)
class NpuProfile:
    max_prompt: int = 1024
    max_context: int = 2048
    group_sizes: tuple[int, ...] = (128, -1)  # -1: channel-wise


NPU = NpuProfile()


def check(folder: str | Path, profile: NpuProfile = NPU) -> list[str]:
    """Every violation of the NPU rules in the folder, as sentences saying what to change."""
    folder = Path(folder)
    manifest = read(folder)
    problems = _shape_limits(manifest)
    if manifest.format == "openvino":
        for name in [manifest.model_file, manifest.decode_file]:
            if name:
                found = _openvino(read_ir(folder, name, manifest.weights_file), profile)
                problems += [f"{name}: {p}" for p in found] if manifest.decode_file else found
    else:
        problems += _onnx(folder, manifest, profile)
    return problems


def _shape_limits(manifest: Manifest) -> list[str]:
    shapes = manifest.shapes
    if "max_prompt" not in shapes:
        return []
    if shapes["max_prompt"] > shapes["max_context"]:
        return [
            f"prompt window {shapes['max_prompt']} exceeds the KV capacity {shapes['max_context']}: "
            "set --max-prompt at most --max-context"
        ]
    return []


def _dynamic(name: str, dims) -> str:
    return (
        f"input {name} has dynamic dimensions {dims}: the NPU compiles static shapes only (export static "
        "shapes, or let openvino_genai's NPU pipeline fix them with MAX_PROMPT_LEN)"
    )


def _openvino(model, profile: NpuProfile) -> list[str]:
    problems = [
        _dynamic(p.get_any_name(), str(p.get_partial_shape())) for p in model.inputs if p.get_partial_shape().is_dynamic
    ]
    asymmetric, groups = 0, set()
    for kind, weight, scale, has_zero_point in _int4_weights(model):
        asymmetric += has_zero_point or kind == "u4"
        # Grouped weights are 3-D; the group axis is where the scale has extent 1. 2-D: channel-wise.
        groups.add(
            next((w for w, s in zip(weight, scale, strict=True) if s == 1 and w > 1), -1) if len(weight) == 3 else -1
        )
    float_matmuls = sum(
        op.get_type_name() == "MatMul" and _float_constant(op.input_value(1).get_node()) for op in model.get_ops()
    )
    if asymmetric:
        problems.append(f"{asymmetric} weights are asymmetric INT4 (zero points): the NPU needs symmetric INT4")
    bad = sorted(g for g in groups if g not in profile.group_sizes)
    if bad:
        problems.append(f"INT4 group size {bad}: the NPU needs group size 128 or channel-wise (-1)")
    if float_matmuls:
        problems.append(
            f"{float_matmuls} MatMul weights are not INT4-compressed: quantize with symmetric INT4 "
            "(group 128 or channel-wise, ratio 1.0)"
        )
    return problems


def _int4_weights(model):
    """(type, weight shape, scale shape, has zero point) for every INT4 decompression subgraph:
    Constant(i4|u4) -> Convert -> [Subtract zero point] -> Multiply(scale)."""
    for op in model.get_ops():
        if op.get_type_name() != "Multiply":
            continue
        x, scale = op.input_value(0).get_node(), op.input_value(1).get_node()
        has_zero_point = x.get_type_name() == "Subtract"
        if has_zero_point:
            x = x.input_value(0).get_node()
        if x.get_type_name() != "Convert":
            continue
        w = x.input_value(0).get_node()
        kind = w.get_output_element_type(0).get_type_name()
        if w.get_type_name() == "Constant" and kind in ("i4", "u4"):
            yield kind, list(w.get_output_shape(0)), list(scale.get_output_shape(0)), has_zero_point


def _float_constant(node) -> bool:
    """A MatMul weight stored as a float constant (possibly behind a plain Convert)."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return (
        node.get_type_name() == "Constant"
        and node.get_output_element_type(0).is_real()
        and node.get_output_size() == 1
        and len(node.get_output_shape(0)) == 2
    )


def _onnx(folder: Path, manifest: Manifest, profile: NpuProfile) -> list[str]:
    import onnx

    problems = []
    for name in [manifest.model_file, manifest.decode_file]:
        if not name:
            continue
        graph = onnx.load(folder / name, load_external_data=False).graph
        weights = {t.name for t in graph.initializer}
        float_matmuls = sum(n.op_type == "MatMul" and n.input[1] in weights for n in graph.node)
        if float_matmuls:
            problems.append(
                f"{name}: {float_matmuls} MatMul weights are not INT4-compressed: quantize with "
                "symmetric INT4 (block 128)"
            )
        for i in graph.input:
            dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            if any(isinstance(d, str) or d == 0 for d in dims):
                problems.append(f"{name}: " + _dynamic(i.name, dims))
        for node in graph.node:
            if node.op_type == "MatMulNBits":
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                if len(node.input) > 3 and node.input[3]:
                    problems.append(f"{name}: {node.name} has zero points (asymmetric): the NPU needs symmetric INT4")
                if attrs.get("block_size") not in profile.group_sizes:
                    problems.append(f"{name}: {node.name} block size {attrs.get('block_size')}: the NPU needs 128")
    return problems
