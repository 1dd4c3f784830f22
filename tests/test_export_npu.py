"""`--device-profile npu`: fully static IRs (prefill window + one-token decode, one shared weights
file), symmetric INT4, the NPU lint passing — run here on the CPU device, the only one there is."""

import subprocess
import sys

import numpy as np
import openvino as ov
import pytest

from qwen_edge.export import onnx_graph, openvino_ir
from qwen_edge.export.npu_rules import check
from qwen_edge.export.to_openvino import OpenVINOExportError, export_openvino
from qwen_edge.models.shapes import random_model
from qwen_edge.quantize.recipes import Recipe, compress_npu, compress_openvino

from .onnx_driver import OVSession, run_static, torch_logits

WINDOW, CAPACITY = 8, 32


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))


def static_pair(folder, manifest):
    prefill = openvino_ir.read_ir(folder, manifest["model_file"], manifest["weights_file"])
    decode = openvino_ir.read_ir(folder, manifest["decode_file"], manifest["weights_file"])
    return OVSession(prefill), OVSession(decode)


@pytest.mark.parametrize("n_prompt", [5, 13], ids=["one-padded-window", "two-windows"])
def test_fixed_windows_compute_what_torch_computes(n_prompt, tmp_path):
    model = random_model("tiny-gqa3", seed=2)
    onnx_graph.trace(model, tmp_path / "s.onnx", "static", 0, CAPACITY)
    symbolic = ov.Core().read_model(str(tmp_path / "s.onnx"))
    out = tmp_path / "ir"
    out.mkdir()
    fixed = openvino_ir.fix_windows(symbolic, out, {"prefill.xml": WINDOW, "decode.xml": 1})
    assert fixed["weights_file"] == "prefill.bin" and not (out / "decode.bin").exists()  # stored once
    manifest = {"model_file": "prefill.xml", "decode_file": "decode.xml", "weights_file": fixed["weights_file"]}
    prefill, decode = static_pair(out, manifest)
    ids = np.random.default_rng(3).integers(0, model.config.vocab_size, 20)
    got = run_static(prefill, decode, model.config, ids, n_prompt, WINDOW, CAPACITY)
    want = torch_logits(model, ids[None])[0, n_prompt - 1 :]
    assert np.abs(got - want).max() <= 1e-3
    for io in fixed["io"].values():
        assert all(isinstance(d, int) for shape in io["inputs"].values() for d in shape)


def test_npu_export_conforms_and_equals_the_dynamic_ir_with_the_same_int4_weights(tmp_path):
    manifest = export_openvino(
        "tiny-untied",
        tmp_path / "npu",
        device_profile="npu",
        max_prompt=WINDOW,
        max_context=CAPACITY,
        compress=compress_npu,
    )
    assert check(tmp_path / "npu") == []
    assert manifest["device_profile"] == "npu" and manifest["graph"] == "static"
    assert manifest["shapes"] == {"max_prompt": WINDOW, "max_context": CAPACITY}
    assert manifest["io"]["inputs"]["input_ids"] == [1, WINDOW]
    assert manifest["decode_io"]["inputs"]["input_ids"] == [1, 1]
    assert "openvino_decode.bin" not in manifest["files"]
    recipe = manifest["recipe"]
    assert (recipe["mode"], recipe["ratio"], recipe["group_size"]) == ("int4_sym", 1.0, -1)  # hidden 64 < 128
    assert not recipe["awq"] and recipe["calibration"] is None  # no data given: no data-aware method ran

    # The same fp16 weights, compressed with the same recipe, in the ordinary dynamic IR: the static
    # pair must agree with it.
    export_openvino("tiny-untied", tmp_path / "dyn", stateless=True)
    fields = {k: v for k, v in recipe.items() if k != "name" and k != "calibration"}
    dynamic, _ = compress_openvino(
        ov.Core().read_model(str(tmp_path / "dyn" / openvino_ir.MODEL_XML)), Recipe(**fields)
    )
    ids = np.random.default_rng(4).integers(0, 512, 14)
    prefill, decode = static_pair(tmp_path / "npu", manifest)
    got = run_static(prefill, decode, random_model("tiny-untied").config, ids, 6, WINDOW, CAPACITY)
    want = _stateless_logits(OVSession(dynamic), ids)[5:]
    assert np.abs(got - want).max() <= 1e-3
    assert (got.argmax(-1) == want.argmax(-1)).all()


def _stateless_logits(session, ids):
    """All-at-once prefill on a dynamic stateless IR (KV inputs empty)."""
    cfg = random_model("tiny-untied").config
    shape = (1, cfg.num_key_value_heads, 0, cfg.head_dim)
    feed = {
        "input_ids": ids[None],
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "position_ids": np.arange(len(ids))[None],
        **{f"past_key_values.{i}.{p}": np.zeros(shape, np.float32) for i in range(3) for p in ("key", "value")},
    }
    return session.run(None, feed)[0][0]


def test_npu_window_limits_are_checked_before_any_work(tmp_path):
    with pytest.raises(OpenVINOExportError, match="--max-prompt \\(64\\) must be between 1 and --max-context"):
        export_openvino(
            "tiny", tmp_path / "a", device_profile="npu", max_prompt=64, max_context=32, compress=compress_npu
        )
    with pytest.raises(OpenVINOExportError, match="exceeds the model's"):
        export_openvino(
            "tiny", tmp_path / "b", device_profile="npu", max_prompt=8, max_context=1 << 20, compress=compress_npu
        )
    with pytest.raises(OpenVINOExportError, match="needs its INT4 weight compression"):
        export_openvino("tiny", tmp_path / "d", device_profile="npu", max_prompt=8, max_context=32)
    with pytest.raises(OpenVINOExportError, match="unknown device profile 'gpu'"):
        export_openvino("tiny", tmp_path / "c", device_profile="gpu")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_npu_profile_then_check(tmp_path):
    out = tmp_path / "npu"
    cmd = [sys.executable, "-m", "qwen_edge.cli.main", "export", "tiny", "-o", str(out), "--format", "openvino"]
    cmd += ["--device-profile", "npu", "--max-prompt", "16", "--max-context", "64"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "qwen_edge.cli.main", "check", str(out)], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "conforms to the NPU rules" in checked.stdout
