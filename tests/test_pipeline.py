"""quantize/pipeline.py: the Python API builds what the CLI builds; precision and preset are two
separate choices, and every combination is checked before any work."""

import json

import onnx
import pytest

from qwen_edge.cli.main import main
from qwen_edge.quantize.pipeline import PipelineError, build


def initializer_types(path) -> set[int]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {t.data_type for t in graph.initializer if len(t.dims) == 2}


def test_onnx_fp16_is_written_as_fp16_from_the_api_and_the_weights_shorthand(tmp_path):
    [manifest] = build("tiny", tmp_path / "api", format="onnx", graph="portable", precision="fp16")
    assert manifest["precision"] == "fp16"
    assert initializer_types(tmp_path / "api" / "model.onnx") == {onnx.TensorProto.FLOAT16}
    assert main(["export", "tiny", "-o", str(tmp_path / "cli"), "--graph", "portable", "--weights", "fp16"]) == 0
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["precision"] == "fp16"
    assert initializer_types(tmp_path / "cli" / "model.onnx") == {onnx.TensorProto.FLOAT16}


def test_format_all_from_one_load_with_one_precision(tmp_path):
    manifests = build("tiny", tmp_path / "out", format="all", precision="fp32")
    assert [(m["format"], m["precision"]) for m in manifests] == [("onnx", "fp32"), ("openvino", "fp32")]
    assert (tmp_path / "out" / "onnx" / "manifest.json").exists() and (tmp_path / "out" / "openvino").is_dir()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"format": "all", "quantize": "int4"}, "one OpenVINO export or one ONNX ort export"),
        ({"graph": "portable", "quantize": "int4"}, "one OpenVINO export or one ONNX ort export"),
        ({"quantize": "int3"}, "unknown recipe 'int3'"),
        ({"precision": "int4"}, "is a storage precision"),
        ({"precision": "fp16", "quantize": "int4"}, "made from fp32 weights"),
        ({"quantize": "int4"}, "random weights with no tokenizer"),
        ({"format": "tflite"}, "unknown format"),
    ],
)
def test_combinations_are_refused_before_any_work(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build("tiny", tmp_path / "out", **kwargs)
    assert not list(tmp_path.iterdir())


def test_the_cli_refuses_disagreeing_flags(tmp_path, capsys):
    assert main(["export", "tiny", "-o", str(tmp_path / "o"), "--precision", "fp16", "--dtype", "fp32"]) == 2
    assert "disagree" in capsys.readouterr().err
    assert main(["export", "tiny", "-o", str(tmp_path / "o"), "--weights", "int4", "--quantize", "int8"]) == 2
    assert "disagree" in capsys.readouterr().err
    assert issubclass(PipelineError, ValueError) and not (tmp_path / "o").exists()


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_max_context_is_one_limit_for_every_runtime(fmt, tmp_path):
    """--max-context is the longest prompt + reply, the same in our runtime and onnxruntime-genai."""
    from qwen_edge.export.to_onnx import ORT_CONTEXT
    from qwen_edge.runtime.engine import Engine

    build("tiny", tmp_path / "asked", format=fmt, max_context=24)
    build("tiny", tmp_path / "default", format=fmt)
    asked, default = Engine.load(tmp_path / "asked"), Engine.load(tmp_path / "default")
    assert asked.capacity == 24
    positions = default.manifest.config["max_position_embeddings"]
    assert default.capacity == (min(ORT_CONTEXT, positions) if fmt == "onnx" else positions)
    if fmt == "onnx":
        for folder, engine in ((tmp_path / "asked", asked), (tmp_path / "default", default)):
            assert json.loads((folder / "genai_config.json").read_text())["search"]["max_length"] == engine.capacity
    with pytest.raises(PipelineError, match="--max-context 0: give a number of tokens"):
        build("tiny", tmp_path / "zero", format=fmt, max_context=0)
