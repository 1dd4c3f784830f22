"""`export --quantize` compressing weight by weight from a lazily read model (quantize/streamed.py)
must write what the whole-model path (float export, then NNCF) writes."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from qwen_edge.models.lazy import LazyError
from qwen_edge.models.loaders import load, open_lazy
from qwen_edge.models.shapes import random_model, shape_config
from qwen_edge.quantize import recipes
from qwen_edge.quantize.pipeline import build

from .gguf_writer import write_gguf, write_random_gguf
from .hf_writer import write_random_hf_folder
from .test_loaders import save_hf_folder


def small(tied: bool):
    # hidden 128: the embedding's INT4 groups of 128 fit (tiny's 64 does not)
    cfg = shape_config("tiny" if tied else "tiny-untied", hidden_size=128, intermediate_size=256, num_key_value_heads=2)
    return random_model(cfg, torch.float32, seed=5, std=0.05)


@pytest.fixture
def row(monkeypatch):
    """A measured-size row for the small shape, so the mixed-precision pick (ratio < 1) runs."""
    monkeypatch.setitem(recipes.DEFAULT_INT4, (128, 3), {"group_size": 32, "ratio": 0.8})


def constants(path):
    import openvino as ov

    ops = ov.Core().read_model(str(path)).get_ops()
    return {op.get_friendly_name(): op for op in ops if op.get_type_name() == "Constant"}


@pytest.mark.parametrize("tied", [True, False])
def test_openvino_streamed_int4_holds_nncfs_integers(tied, row, tmp_path):
    gguf = write_gguf(small(tied), tmp_path / "m.gguf")
    streamed = build(str(gguf), tmp_path / "streamed", format="openvino", quantize="int4")[0]
    whole = build(load(str(gguf), torch.float16), tmp_path / "whole", format="openvino", quantize="int4")[0]
    assert streamed["quantized_while_exporting"] and "quantized_while_exporting" not in whole
    assert streamed["recipe"] == whole["recipe"] and streamed["precision"] == "int4"
    a = constants(tmp_path / "streamed" / "openvino_model.xml")
    b = constants(tmp_path / "whole" / "openvino_model.xml")
    weights = [n for n, op in b.items() if ".weight" in n]
    kinds = {str(b[n].get_element_type()) for n in weights}
    assert {"<Type: 'uint4_t'>", "<Type: 'uint8_t'>"} <= kinds  # 4-bit layers, and 8-bit ones (ratio, head)
    for name in weights:  # values, zero points and scales: the same type and numbers
        assert a[name].get_element_type() == b[name].get_element_type(), name
        assert np.array_equal(a[name].get_data(), b[name].get_data()), name


def ort_logits(folder, ids):
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            feeds[i.name] = np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)
    return session.run(["logits"], feeds)[0]


def nbits(folder) -> dict:
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    return {n.name.rsplit("/", 1)[0]: next(a.i for a in n.attribute if a.name == "bits") for n in nodes}


def stored_scales(folder) -> tuple[set, set]:
    """(the stored types of every MatMulNBits / GatherBlockQuantized scales input, read directly or
    through a Cast and a Reshape; the table's GatherBlockQuantized block sizes)."""
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    types = {t.name: t.data_type for t in graph.initializer}
    for node in graph.node:  # in graph order: a Reshape of a Cast of an initializer is resolved too
        if node.op_type in ("Cast", "Reshape") and node.input[0] in types:
            types[node.output[0]] = types[node.input[0]]
    nodes = [n for n in graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    blocks = {a.i for n in nodes if n.op_type == "GatherBlockQuantized" for a in n.attribute if a.name == "block_size"}
    return {types.get(n.input[2]) for n in nodes}, blocks


@pytest.mark.parametrize("tied", [True, False])
def test_onnx_streamed_int4_matches_the_nncf_path(tied, row, tmp_path):
    from onnx import TensorProto

    gguf = write_gguf(small(tied), tmp_path / "m.gguf")
    build(str(gguf), tmp_path / "streamed", quantize="int4")
    build(load(str(gguf)), tmp_path / "whole", quantize="int4")
    bits = nbits(tmp_path / "streamed")
    assert bits == nbits(tmp_path / "whole") and set(bits.values()) == {4, 8}
    # scales stored fp16 (Cast back to fp32 in the graph) in both paths; an untied table in blocks of 128
    for path in ("streamed", "whole"):
        types, blocks = stored_scales(tmp_path / path)
        assert types == {TensorProto.FLOAT16}, path
        assert blocks == {128}, path  # tied, streamed: lm_head's 8-bit blocks (128 here)
    ids = np.array([[5, 17, 100, 33, 200, 7, 9]], np.int64)
    a, b = ort_logits(tmp_path / "streamed", ids), ort_logits(tmp_path / "whole", ids)
    manifest = json.loads((tmp_path / "streamed" / "manifest.json").read_text())
    assert manifest["precision"] == "int4"
    if not tied:
        assert np.abs(a - b).max() < 1e-4 * np.abs(b).max()
        assert manifest["recipe"]["embedding_mode"] == "int4_asym"
        return
    # tied: the table is lm_head's 8-bit weights (one copy), so closer to the float model than INT4
    import onnx

    nodes = onnx.load(str(tmp_path / "streamed" / "model.onnx"), load_external_data=False).graph.node
    gather = next(n for n in nodes if n.op_type == "GatherBlockQuantized")
    head = next(n for n in nodes if n.op_type == "MatMulNBits" and "lm_head" in n.name)
    assert gather.input[0] == head.input[1] and manifest["recipe"]["embedding_mode"] is None
    build(str(gguf), tmp_path / "float")
    exact = ort_logits(tmp_path / "float", ids)
    assert np.abs(a - exact).mean() < np.abs(b - exact).mean()
    size = lambda folder: sum(f.stat().st_size for f in folder.glob("model.onnx*"))  # noqa: E731
    assert size(tmp_path / "streamed") < size(tmp_path / "whole")


def test_scales_are_stored_fp16_only_where_fp16_holds_them():
    from qwen_edge.export.ort_graph import half_precision

    normal = np.array([1e-4, 0.02, 3.0, 0.0], np.float32)
    assert half_precision(normal).dtype == np.float16
    assert np.allclose(half_precision(normal), normal, rtol=2**-11)
    assert half_precision(np.array([1e-6, 0.02], np.float32)) is None  # subnormal in fp16: fewer bits
    assert half_precision(np.array([7e4], np.float32)) is None  # beyond fp16's range


def test_hf_folder_is_read_lazily_tensor_for_tensor(tmp_path):
    model = small(False)
    folder = save_hf_folder(model, tmp_path / "hf")
    lazy = open_lazy(str(folder), torch.float16)
    assert lazy.config == model.config and lazy.source["sha256"] == load(str(folder)).source["sha256"]
    state = model.state_dict()
    assert set(lazy.model.weights) == set(state)
    for name, tensor in state.items():
        assert torch.equal(lazy.model.weights[name], tensor.half()), name


def test_a_streamed_export_with_report_scores_against_the_float_export(tmp_path):
    gguf = write_gguf(small(True), tmp_path / "m.gguf")
    manifest = build(str(gguf), tmp_path / "q", format="openvino", quantize="int4", report=True)[0]
    report = json.loads((tmp_path / "q" / "report.json").read_text())
    assert manifest["report"] == report and 0 < report["top1_agreement"] <= 1
    assert not list(tmp_path.glob(".q.*"))  # no scratch left beside the output


def test_moe_and_random_shapes_are_not_read_lazily(tmp_path):
    moe = write_gguf(random_model("tiny-moe"), tmp_path / "moe.gguf", arch="qwen2moe")
    with pytest.raises(LazyError, match="MoE"):
        open_lazy(str(moe))
    with pytest.raises(LazyError, match="loaded whole"):
        open_lazy("tiny")


@pytest.mark.parametrize("writer", ["gguf", "hf"])
def test_the_big_model_writers_give_the_same_model_whole_and_lazily(writer, tmp_path):
    """The 7B benchmark's inputs come from these writers: checked here at a small shape, whole
    loading against lazy reading, and against the statistics they promise."""
    cfg = shape_config("tiny-untied")
    if writer == "gguf":
        path = write_random_gguf(cfg, tmp_path / "m.gguf", std=0.02)
    else:
        path = write_random_hf_folder(cfg, tmp_path / "hf", std=0.02, shard_bytes=100_000)
        assert len(list(path.glob("*.safetensors"))) > 1  # sharded, with transformers' index
        assert json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    whole = load(str(path)).model.state_dict()
    lazy = open_lazy(str(path)).model.weights
    assert set(lazy) == set(whole)
    for name, tensor in whole.items():
        assert torch.equal(lazy[name], tensor), name
    w = whole["model.layers.1.mlp.up_proj.weight"]
    assert 0.015 < w.std() < 0.025 and abs(w.mean()) < 0.002
    assert torch.equal(whole["model.norm.weight"], torch.ones(cfg.hidden_size))


@pytest.mark.parametrize("kind", ["u4", "i4"])
def test_packed_4bit_constants_equal_openvinos_own(kind):
    import openvino as ov
    import openvino.opset13 as ops

    from qwen_edge.export.openvino_graph import _integer_constant

    dtype = getattr(ov.Type, kind)
    low, high = (0, 16) if kind == "u4" else (-8, 8)
    values = np.random.default_rng(0).integers(low, high, (5, 3, 7)).astype(np.uint8 if kind == "u4" else np.int8)
    ours = _integer_constant(ops, values, dtype, "w")  # 105 values: an odd count, padded
    theirs = ops.constant(values, dtype=dtype)
    assert ours.get_element_type() == dtype and list(ours.get_output_shape(0)) == [5, 3, 7]
    assert np.array_equal(ours.get_data(), theirs.get_data())


@pytest.mark.parametrize("tied", [True, False])
def test_streamed_exports_run_in_the_ecosystem_runtimes_as_in_ours(tied, tmp_path):
    """The oracles: LLMPipeline loads the streamed INT4 IR, onnxruntime-genai the streamed INT4
    `ort` folder, and both decode greedily what our runtime decodes on the same folder."""
    import openvino as ov
    import openvino_genai

    from qwen_edge.runtime import Engine

    from .test_export_onnx import genai_agrees
    from .test_export_openvino import F32

    gguf = write_gguf(small(tied), tmp_path / "m.gguf")
    build(str(gguf), tmp_path / "ir", format="openvino", quantize="int4")
    build(str(gguf), tmp_path / "ort", quantize="int4")
    prompt = [5, 17, 300, 2, 99, 41, 7, 8]
    pipe = openvino_genai.LLMPipeline(str(tmp_path / "ir"), "CPU", **F32)
    config = pipe.get_generation_config()
    config.max_new_tokens, config.do_sample, config.ignore_eos = 10, False, True
    ids, mask = ov.Tensor(np.array([prompt], np.int64)), ov.Tensor(np.ones((1, len(prompt)), np.int64))
    inputs = openvino_genai.TokenizedInputs(ids, mask)
    theirs = list(pipe.generate(inputs, config).tokens[0])
    ours = Engine.load(tmp_path / "ir", config=F32).generate(prompt, max_new_tokens=10, ignore_eos=True).token_ids
    assert theirs == ours and len(set(ours)) > 1
    ours = Engine.load(tmp_path / "ort").generate(prompt, max_new_tokens=10, ignore_eos=True).token_ids
    assert genai_agrees(tmp_path / "ort", prompt, ours)


def test_concat_rows_meets_parts_of_different_precision_exactly():
    """The `ort` graph packs q, k and v into one MatMulNBits weight; the IR may hold them at different
    precisions (4-bit groups, an 8-bit channel-wise backup, symmetric or not): stacked, each part
    dequantizes to exactly what it did alone, in one layout MatMulNBits reads."""
    from qwen_edge.export.ort_graph import concat_rows, nbits_arrays
    from qwen_edge.quantize.streamed import quantize_weight

    rng = np.random.default_rng(0)
    w = [torch.from_numpy(rng.normal(0, 0.05, (n, 128)).astype(np.float32)) for n in (64, 32, 32, 16)]
    parts = [quantize_weight(w[0], "int4_asym", 32), quantize_weight(w[1], "int8_asym", -1),
             quantize_weight(w[2], "int4_sym", 64), quantize_weight(w[3], "int8_sym", -1)]  # fmt: skip

    def dequantized(q):
        values = q.values.astype(np.float32)
        zp = 0 if q.zero_point is None else q.zero_point.astype(np.float32)
        return ((values - zp) * q.scale).reshape(q.values.shape[0], -1)

    stacked = concat_rows(parts)
    assert stacked.bits == 8 and stacked.group == 32 and stacked.zero_point is not None
    assert np.array_equal(dequantized(stacked), np.concatenate([dequantized(p) for p in parts]))
    values, scales, zp, attrs = nbits_arrays(stacked)
    assert attrs == {"K": 128, "N": 144, "bits": 8, "block_size": 32, "accuracy_level": 4}
    assert values.shape == (144, 4, 32) and scales.shape == zp.shape == (144 * 4,)
    same = concat_rows(parts[:1] * 2)  # alike parts: stacked as they are
    assert same.bits == 4 and np.array_equal(same.values, np.concatenate([parts[0].values] * 2))
