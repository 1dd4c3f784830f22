"""qwen-edge quantize on OpenVINO folders: what gets compressed to what, the report, bad input."""

import collections
import json

import numpy as np
import openvino as ov
import pytest

from qwen_edge.cli.main import main
from qwen_edge.export.to_openvino import export_openvino
from qwen_edge.models.qwen2 import Qwen2Config
from qwen_edge.models.shapes import random_model
from qwen_edge.quantize.calibration import BUILTIN, CalibrationError, windows
from qwen_edge.quantize.evaluate import evaluate
from qwen_edge.quantize.quantize import QuantizeError, quantize
from qwen_edge.quantize.recipes import RecipeError
from qwen_edge.runtime.manifest import verify

from .cache_env import cache_at
from .gguf_writer import write_gguf

# hidden 128: the default INT4 group of 128 fits
HIDDEN_128 = Qwen2Config(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    eos_token_id=2,
)


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    """A tiny untied model with a tokenizer (GGUF), exported as fp16 IR. Hidden size 128, so the
    default group of 128 fits."""

    tmp = tmp_path_factory.mktemp("quant")
    with cache_at(str(tmp / "cache")):
        model = random_model(HIDDEN_128, seed=1, std=0.1)
        export_openvino(str(write_gguf(model, tmp / "m.gguf")), tmp / "fp16")
        return tmp / "fp16"


def weight_types(folder):
    """{element type: count} of the constants feeding MatMul / Gather weights (through their
    decompression chain)."""
    model = ov.Core().read_model(str(folder / "openvino_model.xml"))
    kinds = collections.Counter()
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type().bitwidth <= 8 and op.get_output_size():
            shape = list(op.get_output_shape(0))
            if len(shape) >= 2 and shape[-1] > 1:  # weights; zero points end in a 1 (one per row or group)
                kinds[op.get_element_type().get_type_name()] += 1
    return kinds


def test_int8_compresses_every_matmul_and_the_embedding(fp16_folder, tmp_path):
    manifest = quantize(fp16_folder, tmp_path / "int8", weights="int8", report=False)
    kinds = weight_types(tmp_path / "int8")
    # 2 layers x 7 projections + embedding + lm_head (untied), all int8 asymmetric (u8)
    assert kinds == {"u8": 2 * 7 + 2}, kinds
    assert manifest["precision"] == "int8" and manifest["recipe"]["mode"] == "int8_asym"
    assert manifest["recipe"]["calibration"] is None
    verify(tmp_path / "int8")


def test_int4_data_aware_on_request_and_reports(fp16_folder, tmp_path):
    manifest = quantize(
        fp16_folder, tmp_path / "int4", weights="int4", group_size=128, awq=True, scale_estimation=True,
        samples=4, sample_tokens=64,
    )  # fmt: skip
    kinds = weight_types(tmp_path / "int4")
    assert kinds["u4"] == 2 * 7 + 1 and kinds["u8"] == 1, kinds  # projections + embedding at 4 bit; lm_head 8
    recipe = manifest["recipe"]
    assert recipe["awq"] and recipe["scale_estimation"] and recipe["group_size"] == 128
    assert recipe["calibration"]["source"] == "built-in sample" and recipe["calibration"]["windows"] >= 1
    report = json.loads((tmp_path / "int4" / "report.json").read_text())
    assert report == manifest["report"]
    assert report["reference_perplexity"] > 1 and report["perplexity"] > 1
    assert 0 <= report["top1_agreement"] <= 1 and report["mean_kl"] >= 0
    # the numbers are what they say: the relative rise, and each model scored on its own the same
    assert report["perplexity_increase"] == pytest.approx(report["perplexity"] / report["reference_perplexity"] - 1)
    alone = {f: evaluate(f, windows=report["windows"], window_tokens=report["window_tokens"]).perplexity
             for f in (fp16_folder, tmp_path / "int4")}  # fmt: skip
    assert alone[fp16_folder] == pytest.approx(report["reference_perplexity"], rel=1e-5)
    assert alone[tmp_path / "int4"] == pytest.approx(report["perplexity"], rel=1e-5)
    assert report["generation"]["prompts"] == 8 and 0 <= report["generation"]["similarity"] <= 1
    assert (
        manifest["files"]["openvino_model.bin"]["bytes"]
        < 0.5 * verify(fp16_folder).files["openvino_model.bin"]["bytes"]
    )


def test_int4_sym_ratio_and_channel_wise(fp16_folder, tmp_path):
    quantize(fp16_folder, tmp_path / "q", weights="int4-npu", group_size=-1, ratio=0.5, data_free=True, report=False)
    kinds = weight_types(tmp_path / "q")
    assert kinds["i4"] == 7 and kinds["i8"] == 7 + 2, kinds  # half the projections at 4 bit, the rest int8_sym


def test_evaluate_against_itself_is_exact(fp16_folder):
    scores = evaluate(fp16_folder, reference=fp16_folder, windows=1, window_tokens=128)
    assert scores.top1_agreement == 1.0 and abs(scores.mean_kl) < 1e-9
    assert scores.perplexity == pytest.approx(scores.reference_perplexity)
    assert scores.generation == {"prompts": 8, "similarity": 1.0, "identical": 1.0, "prefix": 1.0}


def test_generation_similarity_counts_matched_tokens():
    from qwen_edge.quantize.similarity import compare

    same = compare([[1, 2, 3, 4]], [[1, 2, 3, 4]])
    assert same == {"prompts": 1, "similarity": 1.0, "identical": 1.0, "prefix": 1.0}
    late = compare([[1, 2, 3, 9]], [[1, 2, 3, 4]])  # 3 of 4 tokens matched, diverging at the 4th
    assert late["similarity"] == pytest.approx(0.75) and late["prefix"] == 0.75 and late["identical"] == 0
    shifted = compare([[7, 1, 2, 3]], [[1, 2, 3, 4]])  # an inserted token costs one match, not all
    assert shifted["similarity"] == pytest.approx(0.75) and shifted["prefix"] == 0
    both = compare([[1, 2], [5]], [[1, 2], [6]])
    assert both["similarity"] == pytest.approx(0.5) and both["identical"] == 0.5


def test_generation_similarity_follows_the_greedy_tokens(fp16_folder, tmp_path):
    """The continuations are the folder's greedy tokens (KV cache reused step to step): the same
    as recomputing every step from the full window's logits."""
    from qwen_edge.quantize.evaluate import WindowLogits
    from qwen_edge.quantize.similarity import PROMPTS, continuations
    from qwen_edge.runtime.tokenizer import Tokenizer

    got = continuations(fp16_folder, PROMPTS[:2], max_new_tokens=6)
    logits, tok = WindowLogits(fp16_folder), Tokenizer(fp16_folder)
    for prompt, new in zip(PROMPTS[:2], got, strict=True):
        ids = tok.encode(prompt)
        expected = []
        for _ in range(6):
            token = int(np.argmax(logits(ids + expected)[-1]))
            if token in tok.eos_token_ids:
                break
            expected.append(token)
        assert new == expected


def test_evaluated_perplexity_is_the_mean_token_nll(fp16_folder):
    """Independent check of the perplexity arithmetic on one window."""
    from qwen_edge.quantize.evaluate import WindowLogits
    from qwen_edge.runtime.tokenizer import Tokenizer

    tokens = Tokenizer(fp16_folder).encode(BUILTIN)[:100]
    logits = WindowLogits(fp16_folder)(tokens).astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    nll = -np.mean([np.log(probs[i, tokens[i + 1]]) for i in range(99)])
    assert evaluate(fp16_folder, windows=1, window_tokens=100).perplexity == pytest.approx(np.exp(nll), rel=1e-6)


def test_bad_input_gets_one_line_and_writes_nothing(fp16_folder, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "not_export").mkdir()
    cases = [
        (["quantize", str(tmp_path / "not_export"), "-o", str(tmp_path / "o1")], "not a qwen-edge export folder"),
        (["quantize", str(fp16_folder), "-o", str(tmp_path / "o2"), "--weights", "int3"], "unknown recipe 'int3'"),
        (
            ["quantize", str(fp16_folder), "-o", str(tmp_path / "o3"), "--calibration", str(tmp_path / "empty.txt")],
            "is empty",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / argv[3]).exists()
    quantize(fp16_folder, tmp_path / "q8", weights="int8", report=False)
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize(tmp_path / "q8", tmp_path / "again", weights="int4")
    assert not (tmp_path / "again").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_unknown_preset_and_short_calibration_text():
    with pytest.raises(RecipeError, match="unknown recipe"):
        quantize("anywhere", "out", weights="int2")
    with pytest.raises(CalibrationError, match="only 3 tokens"):
        windows([1, 2, 3], 4, 64)
    assert [len(w) for w in windows(list(range(300)), 8, 128)] == [128, 128]


def test_budget_search_keeps_the_smallest_recipe_within_budget(fp16_folder, tmp_path):
    """Every ladder step quantized and scored on its own first; the search must then stop at the
    first (smallest) step within a loose and a tight budget, and refuse an impossible one."""
    from qwen_edge.quantize.recipes import ladder, preset

    steps = ladder(preset("int4").without_data())
    assert [s.bits for s in steps][-1] == 8 and len(steps) == 5  # g64, g32 x ratio 1, 0.8; INT8
    increases = []
    for i, step in enumerate(steps):
        options = {"weights": "int8"} if step.bits == 8 else {"group_size": step.group_size, "ratio": step.ratio}
        manifest = quantize(fp16_folder, tmp_path / f"s{i}", data_free=True, eval_windows=1, **options)
        increases.append(manifest["report"]["perplexity_increase"])
    for budget, expected in ((max(increases) + 1, 0), (min(increases), increases.index(min(increases)))):
        out = tmp_path / f"budget-{expected}"
        manifest = quantize(fp16_folder, out, data_free=True, eval_windows=1, max_ppl_increase=budget)
        tries = manifest["budget"]["tries"]
        assert len(tries) == expected + 1 and tries[-1]["within_budget"]
        assert not any(t["within_budget"] for t in tries[:-1])
        assert [t["scores"]["perplexity_increase"] for t in tries] == pytest.approx(increases[: expected + 1])
        kept = steps[expected]
        assert (manifest["recipe"]["group_size"], manifest["recipe"]["ratio"]) == (kept.group_size, kept.ratio)
        assert json.loads((out / "report.json").read_text())["budget"]["tries"] == tries
    with pytest.raises(QuantizeError, match="no recipe within the budget"):
        quantize(fp16_folder, tmp_path / "never", data_free=True, eval_windows=1, max_ppl_increase=min(increases) - 1)
    assert not (tmp_path / "never").exists()
    # data-aware all the way down the ladder, INT8 (which takes no data) included
    with pytest.raises(QuantizeError, match="no recipe within the budget"):
        quantize(fp16_folder, tmp_path / "never2", awq=True, samples=2, sample_tokens=64, eval_windows=1, min_top1=1.01)


def test_embedding_table_at_int4_in_its_own_pass(fp16_folder, tmp_path):
    """embedding_mode puts the (untied) input table at 4 bit; lm_head stays at the backup precision,
    and the ratio still counts only the MatMuls."""
    import dataclasses

    from qwen_edge.quantize.recipes import compress_openvino, preset

    recipe = dataclasses.replace(preset("int4").without_data(), embedding_mode="int4_sym")
    model, ran = compress_openvino(ov.Core().read_model(fp16_folder / "openvino_model.xml"), recipe)
    ov.save_model(model, tmp_path / "openvino_model.xml")
    kinds = weight_types(tmp_path)
    assert kinds == {"u4": 2 * 7, "i4": 1, "u8": 1}, kinds  # projections u4, table i4 (sym), lm_head u8
    assert ran.embedding_mode == "int4_sym"
    # a tied table is lm_head too: the embedding pass is skipped rather than put lm_head at 4 bit
    tied = tmp_path / "tied"
    export_openvino(
        str(write_gguf(random_model(dataclasses.replace(HIDDEN_128, tie_word_embeddings=True)), tmp_path / "t.gguf")),
        tied,
    )
    model, ran = compress_openvino(ov.Core().read_model(tied / "openvino_model.xml"), recipe)
    assert ran.embedding_mode is None


def test_export_with_int8_weights_exports_and_quantizes_in_one_go(tmp_path, capsys):
    model = random_model("tiny-untied", seed=4, std=0.1)
    gguf = write_gguf(model, tmp_path / "m.gguf")
    out = tmp_path / "q"
    cmd = ["export", str(gguf), "-o", str(out), "--format", "openvino", "--weights", "int8", "--report"]
    assert main(cmd) == 0
    manifest = verify(out)
    assert manifest.precision == "int8" and manifest.raw["report"]["top1_agreement"] > 0.5
    assert "top-1 agreement" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the fp16 stage is gone
    # ONNX ort exports quantize in one go too; a two-format export does not (one line, nothing written)
    assert main(["export", str(gguf), "-o", str(tmp_path / "o"), "--weights", "int4"]) == 0
    onnx_manifest = verify(tmp_path / "o")
    assert (onnx_manifest.format, onnx_manifest.precision) == ("onnx", "int4")
    assert "report" not in onnx_manifest.raw and "top-1" not in capsys.readouterr().out  # scored only if asked
    assert main(["export", str(gguf), "-o", str(tmp_path / "r"), "--report"]) == 2  # nothing quantized to score
    assert "add --quantize" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    capsys.readouterr()
    assert main(["export", str(gguf), "-o", str(tmp_path / "a"), "--format", "all", "--weights", "int4"]) == 2
    assert "one OpenVINO export or one ONNX ort export" in capsys.readouterr().err and not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def ort_folder(tmp_path_factory):
    """The same hidden-128 model as fp16_folder's, exported as the `ort` ONNX graph (fp32)."""

    from qwen_edge.export.to_onnx import export_onnx

    tmp = tmp_path_factory.mktemp("ortq")
    with cache_at(str(tmp / "cache")):
        export_onnx(str(write_gguf(random_model(HIDDEN_128, seed=1, std=0.1), tmp / "m.gguf")), tmp / "fp32")
        return tmp / "fp32"


@pytest.mark.parametrize("weights", ["int4", "int4-mobile"])
def test_onnx_int4_runs_as_matmulnbits_and_in_onnxruntime_genai(ort_folder, tmp_path, weights):
    """Asymmetric (zero points repacked for ONNX Runtime) and symmetric INT4 both load, stay close
    to the fp32 graph, and generate in onnxruntime-genai exactly as our ONNX Runtime step does."""
    import onnx

    from qwen_edge.runtime.engine import Engine
    from qwen_edge.runtime.generate import Sampling, generate

    from .test_export_onnx import genai_agrees

    manifest = quantize(ort_folder, tmp_path / "q", weights=weights, eval_windows=1)
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 5 + 1  # per layer: packed qkv, o, gate, up, down; and lm_head
    bits = [next(a.i for a in n.attribute if a.name == "bits") for n in nbits]
    assert bits == [8 if "logits" in n.output else 4 for n in nbits] and bits.count(8) == 1  # lm_head: 8-bit
    assert all(next(a.i for a in n.attribute if a.name == "accuracy_level") == 4 for n in nbits)
    assert not [n for n in graph.node if n.op_type in ("MatMul", "DequantizeLinear")]
    assert bool(len(nbits[0].input) > 3 and nbits[0].input[3]) == (weights == "int4")  # zero points: asym only
    # random tiny models are fragile at 4 bit (OpenVINO's INT4 of the same model agrees ~0.5): a
    # wrong zero-point layout would sit near chance (1/512); the weights are checked exactly below
    assert manifest["report"]["top1_agreement"] >= 0.25, manifest["report"]
    _assert_dequantizes_to_the_original(ort_folder, tmp_path / "q", nbits[0])
    head = next(n for n in nbits if "logits" in n.output)
    _assert_dequantizes_to_the_original(ort_folder, tmp_path / "q", head)
    assert not any(len(n.input) > 5 and n.input[5] for n in nbits)  # NNCF's doubled bias dropped
    prompt = [5, 17, 300, 2, 99, 41, 7, 8]
    ours = list(generate(Engine.load(tmp_path / "q").step(), prompt, Sampling(max_new_tokens=10), eos_ids=()))
    assert genai_agrees(tmp_path / "q", prompt, ours)


def _weights(graph) -> dict:
    """Initializers by name, and the fp16 scales under the name of the Cast back to fp32 that reads them."""
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for cast in (n for n in graph.node if n.op_type == "Cast" and n.input[0] in weights):
        weights[cast.output[0]] = weights[cast.input[0]].astype(np.float32)
    return weights


def _assert_dequantizes_to_the_original(fp32_folder, q_folder, node):
    """MatMulNBits's B, scales and zero points, unpacked as ONNX Runtime defines them, give back
    the fp32 weight to within half a quantization step (asymmetric), or one step (symmetric: the
    largest positive values clip at +7 of -8..7), plus what storing the scales in fp16 rounds off
    (2^-11 of up to 15 steps at 4 bit, 255 at 8)."""
    import onnx
    from onnx import numpy_helper

    q = _weights(onnx.load(str(q_folder / "model.onnx")).graph)
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32_folder / "model.onnx")).graph.initializer}
    attrs = {a.name: a.i for a in node.attribute}
    n, k, block, bits = attrs["N"], attrs["K"], attrs["block_size"], attrs["bits"]
    blocks = k // block
    scales = q[node.input[2]].reshape(n, blocks, 1)
    asym = len(node.input) > 3 and bool(node.input[3])
    if bits == 8:  # lm_head: one byte per value, one zero point per block
        values = q[node.input[1]].reshape(n, blocks, block).astype(np.float32)
        zp = q[node.input[3]].reshape(n, blocks, 1).astype(np.float32)
        asym = bool(np.any(zp != 128))
    else:
        packed = q[node.input[1]].reshape(n, blocks, block // 2)
        values = np.stack([packed & 15, packed >> 4], -1).reshape(n, blocks, block).astype(np.float32)
        zp = np.full((n, blocks, 1), 8, np.float32)
    if asym and bits == 4:
        zp = q[node.input[3]].reshape(n, -1)
        zp = np.stack([zp & 15, zp >> 4], -1).reshape(n, -1)[:, :blocks, None].astype(np.float32)
    dequantized = ((values - zp) * scales).reshape(n, k)
    weight = original[node.input[1].removesuffix("_quantized").removesuffix("_n8")].T  # fp32 graph: [K, N]
    step = np.abs(scales).repeat(block, -1).reshape(n, k)
    assert np.all(np.abs(dequantized - weight) <= step * ((0.5 if asym else 1.0) + (2**bits - 1) * 2**-11) + 1e-6)


SMALL_ROW = (32, 0.8, False, False)  # group, ratio, AWQ, scale estimation


def test_int4_defaults_come_from_the_per_size_table(fp16_folder, tmp_path):
    from qwen_edge.quantize.recipes import DEFAULT_INT4, default_recipe, preset

    small = default_recipe("int4", 896, 24)  # Qwen2 / Qwen2.5 0.5B: a measured row
    assert (small.group_size, small.ratio, small.awq, small.scale_estimation) == SMALL_ROW
    assert small.embedding_mode == "int4_asym"
    assert default_recipe("int4", 1536, 28) != preset("int4")  # 1.5B: a measured row
    # no row (7B): the preset, data-free g64 with the table at INT4 (measured never worse than data-free g128)
    assert default_recipe("int4", 3584, 28) == preset("int4")
    assert not preset("int4").data_aware and preset("int4").group_size == 64
    manifest = quantize(fp16_folder, tmp_path / "q", report=False)  # the default: no calibration text read
    assert manifest["recipe"]["calibration"] is None and manifest["recipe"]["group_size"] == 64
    assert weight_types(tmp_path / "q") == {"u4": 2 * 7 + 1, "u8": 1}
    assert default_recipe("int8", 896, 24) == preset("int8")  # rows are for int4 only
    assert all(len(key) == 2 for key in DEFAULT_INT4)


def test_onnx_int4_graph_computes_what_its_dequantized_weights_compute(ort_folder, tmp_path, monkeypatch):
    """The MatMulNBits + GatherBlockQuantized graph (fp32 compute) against the fp32 graph holding
    the same weights dequantized: equal logits. Catches graph rewiring errors the weight check cannot (NNCF's
    doubled bias: its q/k/v biases added twice). With ratio 0.6 some layers are NNCF's 8-bit backup,
    rewritten as 8-bit MatMulNBits, and lm_head is 8-bit too: every kind of node is covered."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from qwen_edge.export.ort_graph import write_last_logits
    from qwen_edge.quantize import onnx_weights
    from qwen_edge.quantize.evaluate import WindowLogits

    monkeypatch.setattr(onnx_weights, "ACCURACY_LEVEL", 0)  # fp32 compute, to compare exactly
    quantize(ort_folder, tmp_path / "q", weights="int4", ratio=0.6, report=False)
    q = onnx.load(str(tmp_path / "q" / "model.onnx"))
    weights = _weights(q.graph)
    reference = onnx.load(str(ort_folder / "model.onnx"))
    nbits = [n for n in q.graph.node if n.op_type == "MatMulNBits"]
    bits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in nbits}
    assert sorted(bits.values()).count(8) >= 2 and bits[next(n.name for n in nbits if "logits" in n.output)] == 8
    assert not [n for n in q.graph.node if n.op_type in ("MatMul", "DequantizeLinear")]
    for node in nbits:
        attrs = {a.name: a.i for a in node.attribute}
        n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
        raw = weights[node.input[1]].reshape(n, k // block, -1)
        if attrs["bits"] == 4:
            values = np.stack([raw & 15, raw >> 4], -1).reshape(n, k // block, block).astype(np.float32)
            zp = weights[node.input[3]].reshape(n, -1)
            zp = np.stack([zp & 15, zp >> 4], -1).reshape(n, -1)[:, : k // block, None].astype(np.float32)
        else:
            values = raw.astype(np.float32)
            zp = weights[node.input[3]].reshape(n, k // block, 1).astype(np.float32)
        dequantized = ((values - zp) * weights[node.input[2]].reshape(n, -1, 1)).reshape(n, k).T
        name = node.input[1].removesuffix("_quantized").removesuffix("_n8")
        target = next(t for t in reference.graph.initializer if t.name == name)
        target.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(dequantized, np.float32), name))
    gathers = [n for n in q.graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(gathers) == 1  # the embedding table, INT4 too
    for node in gathers:
        block = next(a.i for a in node.attribute if a.name == "block_size")
        packed, scales = weights[node.input[0]], weights[node.input[2]]
        values = np.stack([packed & 15, packed >> 4], -1).reshape(packed.shape[0], -1, block).astype(np.float32)
        zp = np.full(scales.shape, 8, np.uint8)
        if len(node.input) > 3:  # asymmetric: zero points two per byte
            zp = weights[node.input[3]]
            zp = np.stack([zp & 15, zp >> 4], -1).reshape(len(zp), -1)[:, : scales.shape[1]]
        dequantized = ((values - zp[..., None]) * scales[..., None]).reshape(len(values), -1)
        name = node.input[0].removesuffix("_q4")
        target = next(t for t in reference.graph.initializer if t.name == name)
        target.CopyFrom(numpy_helper.from_array(dequantized.astype(np.float32), name))
    fake = tmp_path / "fake"
    fake.mkdir()
    onnx.save_model(reference, str(fake / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    write_last_logits(fake / "model.onnx")  # the folder's runtime_file, as the manifest copied below lists
    shutil.copyfile(ort_folder / "manifest.json", fake / "manifest.json")
    ids = list(range(3, 40))
    got, want = WindowLogits(tmp_path / "q")(ids), WindowLogits(fake)(ids)
    assert np.abs(got - want).max() <= 1e-3


def test_cli_budgets_parse_and_succeed_and_eval_agrees_with_the_report(fp16_folder, tmp_path, capsys):
    """`--max-ppl-increase 900%` is the share 9.0; a budget both within reach keeps the first try;
    `qwen-edge eval` on the result against its input gives the report's numbers."""
    from qwen_edge.cli.main import main

    out = tmp_path / "q"
    args = ["quantize", str(fp16_folder), "-o", str(out), "--data-free", "--eval-windows", "1"]
    assert main([*args, "--max-ppl-increase", "900%", "--min-top1", "0.0"]) == 0
    budget = json.loads((out / "manifest.json").read_text())["budget"]
    assert budget["max_ppl_increase"] == pytest.approx(9.0) and budget["min_top1"] == 0.0
    assert len(budget["tries"]) == 1 and budget["tries"][0]["within_budget"]
    with pytest.raises(SystemExit) as bad:  # argparse's own exit, with the rule in one line
        main([*args[:3], str(tmp_path / "bad"), "--max-ppl-increase", "five"])
    assert bad.value.code == 2 and "'five' is not a share: write 5% or 0.05" in capsys.readouterr().err
    assert main(["eval", str(out), "--reference", str(fp16_folder), "--windows", "1", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    for key in ("perplexity", "reference_perplexity", "perplexity_increase", "top1_agreement"):
        assert scores[key] == pytest.approx(report[key], rel=1e-6), key


def test_gptq_on_request(fp16_folder, tmp_path):
    """--gptq runs NNCF's GPTQ on the calibration text (recorded in the manifest), and is refused
    with --data-free."""
    manifest = quantize(fp16_folder, tmp_path / "q", weights="int4", group_size=128, gptq=True, samples=4,
                        sample_tokens=64, report=False)  # fmt: skip
    assert manifest["recipe"]["gptq"] and manifest["recipe"]["calibration"]["windows"] >= 1
    assert weight_types(tmp_path / "q")["u4"] >= 2 * 7
    with pytest.raises(QuantizeError, match="disagree"):
        quantize(fp16_folder, tmp_path / "r", weights="int4", gptq=True, data_free=True)


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_onnx_data_aware_carries_the_openvino_integers_over(ort_folder, fp16_folder, tmp_path, method):
    """--gptq / --awq on an ONNX `ort` folder: NNCF runs on an IR of its weights, and every MatMulNBits
    holds exactly the integers, zero points and scales the same recipe writes into the OpenVINO
    folder of the same model (GPTQ is deterministic; AWQ's folded scales live in those weights). The
    graph computes what that IR computes (top-1, against chance 1/512 for a miswired node), and
    onnxruntime-genai runs it as our runtime does."""
    import onnx
    import openvino as ov

    from qwen_edge.export.ort_graph import nbits_arrays
    from qwen_edge.quantize.carry_over import _weight, ir_integers
    from qwen_edge.runtime.engine import Engine
    from qwen_edge.runtime.generate import Sampling, generate

    from .test_export_onnx import genai_agrees

    recipe = dict(weights="int4", group_size=32, ratio=0.8, samples=4, sample_tokens=64, report=False, **{method: True})
    manifest = quantize(ort_folder, tmp_path / "ort", **recipe)
    quantize(fp16_folder, tmp_path / "ir", **recipe)
    assert manifest["recipe"][method] and manifest["recipe"]["calibration"]["windows"] == 4
    assert manifest["recipe"]["embedding_mode"] == "int4_asym"
    ir = ir_integers(ov.Core().read_model(str(tmp_path / "ir" / "openvino_model.xml")))
    graph = onnx.load(str(tmp_path / "ort" / "model.onnx")).graph
    weights = _weights(graph)
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 5 + 1 and not [n for n in graph.node if n.op_type == "MatMul"]
    for node in nbits:
        values, scales, zp, attrs = nbits_arrays(_weight(ir, node.input[1].rsplit(".", 1)[0]))
        assert {a.name: a.i for a in node.attribute}["bits"] == attrs["bits"], node.name
        assert np.array_equal(weights[node.input[1]], values), node.name
        assert np.array_equal(weights[node.input[2]], scales.astype(np.float16).astype(np.float32)), node.name
        assert np.array_equal(weights[node.input[3]], zp), node.name
    assert {a.i for n in nbits for a in n.attribute if a.name == "bits"} == {4, 8}  # ratio's 8-bit layers, lm_head
    assert evaluate(tmp_path / "ort", tmp_path / "ir", None, 1).top1_agreement >= 0.75
    if method == "gptq":
        prompt = [5, 17, 42, 99]
        ours = list(generate(Engine.load(tmp_path / "ort").step(), prompt, Sampling(max_new_tokens=10), eos_ids=()))
        assert genai_agrees(tmp_path / "ort", prompt, ours)
