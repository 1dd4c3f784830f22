"""Qwen2-MoE in both built graphs — the ort graph on ONNX Runtime's MoE kernel, the OpenVINO IR op
by op — against our torch module (itself held to transformers' Qwen2MoeForCausalLM in
test_qwen2_parity.py): prefill, then token-by-token decode, for the three MoE layouts the family
uses; and the same greedy tokens through the runtime's Engine."""

import numpy as np
import pytest

from qwen_edge.export import openvino_graph, ort_graph
from qwen_edge.models.reference import TorchStep
from qwen_edge.models.shapes import random_model, shape_config
from qwen_edge.runtime.generate import Sampling, generate

from .onnx_driver import empty_past, run_portable, session, torch_logits

VARIANTS = {
    "shared expert (Qwen2-57B-A14B, Qwen1.5-MoE)": {},
    "routed only": dict(shared_expert_intermediate_size=0),
    "normalized top-k, dense layer 0": dict(norm_topk_prob=True, mlp_only_layers=[0]),
}


@pytest.fixture(params=list(VARIANTS), scope="module")
def moe(request):
    return random_model(shape_config("tiny-moe", **VARIANTS[request.param]), seed=1, std=0.1)


def ids_for(model, n=10):
    return np.random.default_rng(3).integers(0, model.config.vocab_size, (1, n))


def test_ort_graph_moe_matches_torch(moe, tmp_path):
    ort_graph.build(moe, tmp_path / "model.onnx")
    ids = ids_for(moe)
    got = run_portable(session(tmp_path), moe.config, ids, 4)  # prefill 4, then 6 decode steps
    assert np.abs(got - torch_logits(moe, ids)).max() < 1e-4


def test_openvino_graph_moe_matches_torch(moe):
    import openvino as ov

    compiled = ov.Core().compile_model(
        openvino_graph.build(moe, fp16=False), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    ids, cfg = ids_for(moe), moe.config
    past, out, start = empty_past(cfg, 1, 0), [], 0
    for stop in [4, *range(5, ids.shape[1] + 1)]:
        feed = {"input_ids": ids[:, start:stop], "attention_mask": np.ones((1, stop), np.int64),
                "position_ids": np.arange(start, stop)[None], **past}  # fmt: skip
        result = compiled(feed)
        past = {k: result[k.replace("past_key_values", "present")] for k in past}
        out.append(result["logits"])
        start = stop
    assert np.abs(np.concatenate(out, axis=1) - torch_logits(moe, ids)).max() < 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_moe_exports_generate_like_torch_in_the_engine(fmt, tmp_path, monkeypatch):
    from qwen_edge.quantize.pipeline import build
    from qwen_edge.runtime import Engine

    from .gguf_writer import write_gguf

    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))
    model = random_model("tiny-moe", seed=2, std=0.1)
    build(str(write_gguf(model, tmp_path / "m.gguf")), tmp_path / "out", format=fmt, precision="fp32")
    config = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"} if fmt == "openvino" else None
    prompt = [5, 17, 30, 2, 99, 41, 7]
    got = Engine.load(tmp_path / "out", config=config).generate(prompt, max_new_tokens=12, ignore_eos=True)
    assert got.token_ids == list(generate(TorchStep(model), prompt, Sampling(max_new_tokens=12, ignore_eos=True)))
