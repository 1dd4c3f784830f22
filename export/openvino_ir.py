"""OpenVINO IR files: stateful by default (KV cache kept inside the model).

    ov.Model (openvino_graph.build, or a portable ONNX trace for MoE) --beam_idx Gather on every
        past--> make stateful --ReadValue starts as zeros [batch, kv_heads, 0, head_dim]-->
        openvino_model.xml/.bin (fp16)

Stateful IR keeps the cache as OpenVINO variables (ReadValue / Assign) so no KV crosses the API
per token; `beam_idx` reorders it between steps. This is the form openvino_genai.LLMPipeline and
optimum-intel's OVModelForCausalLM load. `stateless` keeps explicit past / present tensors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_XML = "openvino_model.xml"
DECODE_XML = "openvino_decode.xml"


def to_stateful(model, past_names: list[str], present_names: list[str]) -> None:
    """In place: past_key_values.* inputs and present.* outputs become model state."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    batch = model.input("input_ids").get_partial_shape()[0]
    beam_idx = ops.parameter(ov.PartialShape([batch]), ov.Type.i32, name="beam_idx")
    beam_idx.output(0).get_tensor().set_names({"beam_idx"})
    model.add_parameters([beam_idx])
    for name in past_names:
        port = model.input(name)
        consumers = port.get_target_inputs()
        reordered = ops.gather(port, beam_idx, ops.constant(np.int64(0)))
        for consumer in consumers:
            consumer.replace_source_output(reordered.output(0))
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, dict(zip(past_names, present_names, strict=True)))
    # Each conversation starts from an empty cache shaped for the current batch.
    batch_size = ops.gather(ops.shape_of(model.input("input_ids"), "i64"), ops.constant([0]), ops.constant(0))
    for op in model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims = [
            batch_size if i == 0 else ops.constant(np.array([d.get_min_length()], np.int64))
            for i, d in enumerate(op.get_output_partial_shape(0))
        ]
        zeros = ops.broadcast(
            ops.constant(np.array(0, dtype=op.get_output_element_type(0).to_dtype())), ops.concat(dims, 0)
        )
        op.set_arguments([zeros])
    model.validate_nodes_and_infer_types()


def retie(model) -> bool:
    """A tied head leaves the ONNX trace as a second, transposed copy of the embedding table. Point
    the head's MatMul at the embedding itself (transpose_b) so the IR stores the table once, as
    optimum-intel's does: -272 MB fp16 for Qwen2-0.5B. Only byte-equal copies are merged."""
    import openvino.opset13 as ops

    def const(port):
        node = port.get_node()
        return node if node.get_type_name() == "Constant" else None

    tables = [const(op.input_value(0)) for op in model.get_ops() if op.get_type_name() == "Gather"]
    tables = [t for t in tables if t is not None and len(t.get_output_shape(0)) == 2]
    for op in model.get_ops():
        if op.get_type_name() != "MatMul" or op.get_attributes()["transpose_b"]:
            continue
        head = const(op.input_value(1))
        for table in tables:
            if head is None or list(head.get_output_shape(0)) != list(table.get_output_shape(0))[::-1]:
                continue
            if np.array_equal(head.get_data().T, table.get_data()):
                tied = ops.matmul(op.input_value(0), table.output(0), op.get_attributes()["transpose_a"], True)
                tied.set_friendly_name(op.get_friendly_name())
                op.output(0).replace(tied.output(0))
                return True
    return False


def convert(onnx_path: Path, out_dir: Path, n_layers: int, stateful: bool = True, fp16: bool = True) -> dict:
    """Write openvino_model.xml / .bin from a portable ONNX trace into out_dir; return the io spec."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    retie(model)
    return save(model, out_dir, n_layers, stateful, fp16)


def save(model, out_dir: Path, n_layers: int, stateful: bool = True, fp16: bool = True) -> dict:
    """Write a stateless ov.Model (past_key_values.* in, present.* out) as openvino_model.xml /
    .bin, stateful unless asked otherwise; return the io spec. `fp16`: OpenVINO rounds the model's
    f32 constants to fp16 as it saves (for a converted trace; a built graph holds fp16 weights already)."""
    import openvino as ov

    past = [f"past_key_values.{i}.{p}" for i in range(n_layers) for p in ("key", "value")]
    present = [f"present.{i}.{p}" for i in range(n_layers) for p in ("key", "value")]
    if stateful:
        to_stateful(model, past, present)
    ov.save_model(model, str(out_dir / MODEL_XML), compress_to_fp16=fp16)
    return io_of(model)


def io_of(model) -> dict:
    shape = lambda port: [str(d) if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]  # noqa: E731
    stateful = bool(model.get_sinks())
    return {
        "inputs": {p.get_any_name(): shape(p) for p in model.inputs},
        "outputs": {p.get_any_name(): shape(p) for p in model.outputs},
        "stateful": stateful,
        "states": len(model.get_sinks()),
    }


def fix_windows(model, out_dir: Path, windows: dict[str, int]) -> dict:
    """One fully static IR per {file name: tokens per call} from a model whose window is symbolic
    (its KV capacity already fixed). Reshaping changes no constant, so the weights files come out
    byte-identical: the first is kept and shared, the others deleted. Returns {file: io spec} and
    the shared weights file under "weights_file" (None when they differ and each keeps its own)."""
    import filecmp

    import openvino as ov

    ios = {}
    for name, n in windows.items():
        fixed = model.clone()
        fixed.reshape({"input_ids": [1, n], "position_ids": [1, n], "cache_position": [n]})
        ov.save_model(fixed, str(out_dir / name), compress_to_fp16=True)
        ios[name] = io_of(fixed)
    first, *others = [out_dir / Path(name).with_suffix(".bin") for name in windows]
    shared = all(filecmp.cmp(first, other, shallow=False) for other in others)
    if shared:
        for other in others:
            other.unlink()
    else:
        log.warning("the fixed-window IRs' weights differ: each keeps its own .bin")
    return {"io": ios, "weights_file": first.name if shared else None}


def read_ir(folder: Path, name: str, weights_file: str | None = None):
    """An IR from an export folder, with the folder's shared weights file when it has one."""
    import openvino as ov

    return ov.Core().read_model(str(folder / name), str(folder / weights_file) if weights_file else None)


def import_tokenizer_converter() -> None:
    """The conversion's imports alone (a second or two), so they can run ahead on another thread."""
    import openvino_tokenizers  # noqa: F401
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer  # noqa: F401


def convert_tokenizer(tokenizer_dir: Path, out_dir: Path) -> None:
    """openvino_tokenizer.xml / openvino_detokenizer.xml beside the HF files, so LLMPipeline needs
    no Python tokenizer."""
    import json

    import openvino as ov
    from openvino_tokenizers import convert_tokenizer as convert

    # Qwen2's class directly: AutoTokenizer's imports (every model family's) cost 3 s more here,
    # and the converted files come out byte-identical.
    kind = json.loads((tokenizer_dir / "tokenizer_config.json").read_text()).get("tokenizer_class", "")
    if kind.startswith("Qwen2Tokenizer"):
        from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer as Tokenizer
    else:
        from transformers import AutoTokenizer as Tokenizer

    # transformers 5 warns of an "incorrect regex pattern" (a Mistral heuristic) on Qwen's correct one;
    # the converted tokenizer was checked to encode WikiText exactly like the original.
    quiet = [logging.getLogger(f"transformers.tokenization_utils_{m}") for m in ("base", "tokenizers")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        hf = Tokenizer.from_pretrained(str(tokenizer_dir))
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    tokenizer, detokenizer = convert(hf, with_detokenizer=True, skip_special_tokens=True)
    ov.save_model(tokenizer, str(out_dir / "openvino_tokenizer.xml"))
    ov.save_model(detokenizer, str(out_dir / "openvino_detokenizer.xml"))
