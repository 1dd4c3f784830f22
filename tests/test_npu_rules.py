"""The NPU lint flags each rule broken on purpose and passes a conforming export."""

import json
import subprocess
import sys

import nncf
import openvino as ov
import pytest

from qwen_edge.export import openvino_ir
from qwen_edge.export.bundle import seal
from qwen_edge.export.npu_rules import check
from qwen_edge.export.to_onnx import export_onnx
from qwen_edge.export.to_openvino import export_openvino


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))


def compressed(folder, mode, group_size):
    """The folder's IR with NNCF weight compression applied (all MatMuls, ratio 1.0)."""
    xml = folder / openvino_ir.MODEL_XML
    model = nncf.compress_weights(ov.Core().read_model(str(xml)), mode=mode, group_size=group_size, ratio=1.0)
    # Not over the files read_model mapped (rewriting a mapped .bin is a bus error): beside, then rename.
    ov.save_model(model, str(folder / "q.xml"), compress_to_fp16=False)
    (folder / "q.xml").replace(xml)
    (folder / "q.bin").replace(xml.with_suffix(".bin"))
    return folder


def static_ir(tmp_path, max_prompt=8, max_context=32):
    """Static prefill graph -> stateless static IR, sealed with its shapes."""
    export_onnx("tiny-untied", tmp_path / "onnx", graph="static", max_prompt=max_prompt, max_context=max_context)
    out = tmp_path / "ir"
    out.mkdir()
    io = openvino_ir.convert(tmp_path / "onnx" / "model.onnx", out, 3, stateful=False, fp16=False)
    shapes = {"max_prompt": max_prompt, "max_context": max_context}
    seal(
        out, {"format": "openvino", "graph": "static", "model_file": openvino_ir.MODEL_XML, "shapes": shapes, "io": io}
    )
    return out


def test_default_export_breaks_the_shape_and_weight_rules(tmp_path):
    export_openvino("tiny-untied", tmp_path / "ir", weights="fp32")
    problems = check(tmp_path / "ir")
    assert any("input_ids has dynamic dimensions" in p for p in problems)
    assert any("22 MatMul weights are not INT4-compressed" in p for p in problems)


def test_asymmetric_int4_and_group_64_are_flagged(tmp_path):
    folder = compressed(static_ir(tmp_path), nncf.CompressWeightsMode.INT4_ASYM, 64)
    problems = check(folder)
    assert any("asymmetric INT4" in p for p in problems)
    assert any("group size [64]" in p for p in problems)
    assert not any("not INT4-compressed" in p or "dynamic" in p for p in problems)


def test_symmetric_group_64_alone_is_flagged(tmp_path):
    problems = check(compressed(static_ir(tmp_path), nncf.CompressWeightsMode.INT4_SYM, 64))
    assert problems == ["INT4 group size [64]: the NPU needs group size 128 or channel-wise (-1)"]


def test_prompt_window_over_context_is_flagged(tmp_path):
    folder = compressed(static_ir(tmp_path), nncf.CompressWeightsMode.INT4_SYM, -1)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shapes"] = {"max_prompt": 64, "max_context": 32}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert check(folder) == ["prompt window 64 exceeds the KV capacity 32: set --max-prompt at most --max-context"]


def test_conforming_static_symmetric_channel_wise_export_passes(tmp_path):
    folder = compressed(static_ir(tmp_path), nncf.CompressWeightsMode.INT4_SYM, -1)
    assert check(folder) == []
    out = subprocess.run(
        [sys.executable, "-m", "qwen_edge.cli.main", "check", str(folder)], capture_output=True, text=True
    )
    assert out.returncode == 0 and "conforms to the NPU rules" in out.stdout


def test_check_cli_exits_1_and_lists_violations(tmp_path):
    export_onnx("tiny", tmp_path / "onnx", graph="portable")
    out = subprocess.run(
        [sys.executable, "-m", "qwen_edge.cli.main", "check", str(tmp_path / "onnx")], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "NPU: model.onnx: input input_ids has dynamic dimensions" in out.stdout
    assert "MatMul weights are not INT4-compressed" in out.stdout


# A model whose every MatMul input is a multiple of 128, so the NPU's group size is exercised.
def _h128():
    import dataclasses

    from qwen_edge.models.loaders import Loaded
    from qwen_edge.models.shapes import random_model, shape_config

    cfg = dataclasses.replace(shape_config("tiny-untied"), hidden_size=128, intermediate_size=256, head_dim=32)
    return Loaded(random_model(cfg, seed=2), {"kind": "random", "shape": "tiny-untied, hidden 128"})


def onnx_nbits(tmp_path, block_size: int, symmetric: bool):
    """The static ONNX pair with every MatMul made MatMulNBits by ONNX Runtime's own quantizer."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    folder = tmp_path / "onnx"
    export_onnx(_h128(), folder, graph="static", max_prompt=8, max_context=32)
    for name in ("model.onnx", "decode.onnx"):
        quantizer = MatMulNBitsQuantizer(onnx.load(str(folder / name)), block_size=block_size, is_symmetric=symmetric)
        quantizer.process()
        (folder / name).unlink()
        onnx.save(quantizer.model.model, str(folder / name))  # small: weights inline
    return folder


def test_onnx_matmulnbits_rules(tmp_path):
    problems = check(onnx_nbits(tmp_path / "asym", 32, symmetric=False))
    assert any("has zero points (asymmetric): the NPU needs symmetric INT4" in p for p in problems)
    assert any("block size 32: the NPU needs 128" in p for p in problems)
    assert not any("not INT4-compressed" in p for p in problems)
    assert check(onnx_nbits(tmp_path / "sym", 128, symmetric=True)) == []  # block 128, symmetric: conforming


def test_the_npu_export_ships_group_128_and_refuses_a_violation(tmp_path):
    from qwen_edge.export.to_openvino import OpenVINOExportError
    from qwen_edge.quantize.recipes import compress_npu

    manifest = export_openvino(_h128(), tmp_path / "npu", device_profile="npu", max_prompt=8, max_context=32,
                               compress=compress_npu)  # fmt: skip
    # every MatMul input here is a multiple of 128, so the preset's group of 128 is what ships
    assert manifest["recipe"]["group_size"] == 128 and check(tmp_path / "npu") == []

    def asymmetric(model):
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=64, ratio=1.0), {}

    with pytest.raises(OpenVINOExportError, match="the NPU export breaks the NPU rules: .*asymmetric INT4"):
        export_openvino(_h128(), tmp_path / "bad", device_profile="npu", max_prompt=8, max_context=32,
                        compress=asymmetric)  # fmt: skip
    assert not (tmp_path / "bad").exists() and [p.name for p in tmp_path.iterdir()] == ["npu"]
