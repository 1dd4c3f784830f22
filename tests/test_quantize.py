"""qwen-edge quantize on OpenVINO folders: what gets compressed to what, the report, bad input."""

import collections
import json

import numpy as np
import openvino as ov
import pytest

from qwen_edge.cli.main import main
from qwen_edge.export.to_openvino import export_openvino
from qwen_edge.models.shapes import random_model
from qwen_edge.quantize.calibration import BUILTIN, CalibrationError, windows
from qwen_edge.quantize.evaluate import evaluate
from qwen_edge.quantize.quantize import QuantizeError, quantize
from qwen_edge.quantize.recipes import RecipeError
from qwen_edge.runtime.manifest import verify

from .gguf_writer import write_gguf


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    """A tiny untied model with a tokenizer (GGUF), exported as fp16 IR. Hidden size 128, so the
    default group of 128 fits."""
    import os

    from qwen_edge.models.qwen2 import Qwen2Config

    tmp = tmp_path_factory.mktemp("quant")
    os.environ["QWEN_EDGE_CACHE"] = str(tmp / "cache")
    cfg = Qwen2Config(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=2,
    )
    model = random_model(cfg, seed=1, std=0.1)
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


def test_int4_data_aware_keeps_embeddings_at_int8_and_reports(fp16_folder, tmp_path):
    manifest = quantize(fp16_folder, tmp_path / "int4", weights="int4", samples=4, sample_tokens=64)
    kinds = weight_types(tmp_path / "int4")
    assert kinds["u4"] == 2 * 7 and kinds["u8"] == 2, kinds  # projections at 4 bit; embedding + lm_head backup
    recipe = manifest["recipe"]
    assert recipe["awq"] and recipe["scale_estimation"] and recipe["group_size"] == 128
    assert recipe["calibration"]["source"] == "built-in sample" and recipe["calibration"]["windows"] >= 1
    report = json.loads((tmp_path / "int4" / "report.json").read_text())
    assert report == manifest["report"]
    assert report["reference_perplexity"] > 1 and report["perplexity"] > 1
    assert 0 <= report["top1_agreement"] <= 1 and report["mean_kl"] >= 0
    assert (
        manifest["files"]["openvino_model.bin"]["bytes"]
        < 0.5 * verify(fp16_folder)["files"]["openvino_model.bin"]["bytes"]
    )


def test_int4_sym_ratio_and_channel_wise(fp16_folder, tmp_path):
    quantize(fp16_folder, tmp_path / "q", weights="int4-npu", group_size=-1, ratio=0.5, data_free=True, report=False)
    kinds = weight_types(tmp_path / "q")
    assert kinds["i4"] == 7 and kinds["i8"] == 7 + 2, kinds  # half the projections at 4 bit, the rest int8_sym


def test_evaluate_against_itself_is_exact(fp16_folder):
    scores = evaluate(fp16_folder, reference=fp16_folder, windows=1, window_tokens=128)
    assert scores.top1_agreement == 1.0 and abs(scores.mean_kl) < 1e-9
    assert scores.perplexity == pytest.approx(scores.reference_perplexity)


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
    assert [s.bits for s in steps][-1] == 8 and len(steps) == 7
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


def test_export_with_int8_weights_exports_and_quantizes_in_one_go(tmp_path, capsys):
    model = random_model("tiny-untied", seed=4, std=0.1)
    gguf = write_gguf(model, tmp_path / "m.gguf")
    out = tmp_path / "q"
    assert main(["export", str(gguf), "-o", str(out), "--format", "openvino", "--weights", "int8"]) == 0
    manifest = verify(out)
    assert manifest["precision"] == "int8" and manifest["report"]["top1_agreement"] > 0.5
    assert "top-1 agreement" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the fp16 stage is gone
    assert main(["export", str(gguf), "-o", str(tmp_path / "o"), "--weights", "int4"]) == 2  # ONNX: not yet
    assert "OpenVINO exports only" in capsys.readouterr().err and not (tmp_path / "o").exists()
