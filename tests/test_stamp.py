"""Layer stamping: a 2-layer trace stamped out to N layers computes what a full trace computes."""

import collections

import numpy as np
import onnx
import pytest

from qwen_edge.export import onnx_graph
from qwen_edge.models.shapes import random_model, shape_config

from .onnx_driver import run_portable, session, torch_logits


def op_counts(path):
    return collections.Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)


@pytest.mark.parametrize("shape", ["tiny", "tiny-moe"])
def test_stamped_graph_equals_a_full_trace(shape, tmp_path, monkeypatch):
    model = random_model(shape_config(shape, num_hidden_layers=5), seed=9)
    onnx_graph.trace(model, tmp_path / "stamped.onnx")
    monkeypatch.setattr(onnx_graph, "_stampable", lambda cfg: False)
    onnx_graph.trace(model, tmp_path / "full.onnx")
    assert op_counts(tmp_path / "stamped.onnx")["MatMul"] == op_counts(tmp_path / "full.onnx")["MatMul"]
    ids = np.random.default_rng(0).integers(0, 512, (1, 9))
    stamped = run_portable(session(tmp_path, "stamped.onnx"), model.config, ids, split=4)
    full = run_portable(session(tmp_path, "full.onnx"), model.config, ids, split=4)
    assert np.abs(stamped - full).max() <= 1e-4
    assert np.abs(stamped - torch_logits(model, ids)).max() <= 1e-3


def test_layers_of_different_kinds_fall_back_to_a_full_trace(tmp_path, caplog):
    # decoder_sparse_step=2: MoE and dense layers alternate, so layer 1 is no template for all.
    cfg = shape_config("tiny-moe", num_hidden_layers=4, decoder_sparse_step=2)
    assert not onnx_graph._stampable(cfg)
    model = random_model(cfg, seed=1)
    with caplog.at_level("INFO"):
        onnx_graph.trace(model, tmp_path / "m.onnx")
    assert "tracing 4 layers" in caplog.text and "stamped" not in caplog.text
    ids = np.random.default_rng(1).integers(0, 512, (1, 7))
    got = run_portable(session(tmp_path, "m.onnx"), cfg, ids, split=3)
    assert np.abs(got - torch_logits(model, ids)).max() <= 1e-3
