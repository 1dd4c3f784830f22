"""OpenVINO IR export: stateful and stateless IR compute what our torch model computes, and the
folder runs as it is in openvino_genai.LLMPipeline and optimum-intel's OVModelForCausalLM."""

import numpy as np
import openvino as ov
import pytest

from qwen_edge.export.to_openvino import export_openvino
from qwen_edge.models.loaders import load
from qwen_edge.models.reference import TorchStep
from qwen_edge.models.shapes import random_model
from qwen_edge.runtime.generate import Sampling, generate
from qwen_edge.runtime.manifest import verify

from .cache_env import cache_at
from .gguf_writer import write_gguf
from .onnx_driver import empty_past, torch_logits

# OpenVINO CPU defaults: bf16 compute where the CPU has it, and a u8 KV cache inside fused attention
F32 = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))


def run_ir(folder, cfg, ids, split, stateful):
    """Prefill ids[:, :split], then one token at a time, on the IR: logits of every position."""
    request = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", F32).create_infer_request()
    past = empty_past(cfg, 1, 0)
    out, start = [], 0
    for stop in [split, *range(split + 1, ids.shape[1] + 1)]:
        feed = {
            "input_ids": ids[:, start:stop],
            "attention_mask": np.ones((1, stop), np.int64),
            "position_ids": np.arange(start, stop)[None],
        }
        feed.update({"beam_idx": np.array([0], np.int32)} if stateful else past)
        result = request.infer(feed)
        if not stateful:
            past = {k: result[k.replace("past_key_values", "present")] for k in past}
        out.append(result["logits"])
        start = stop
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("shape", ["tiny", "tiny-untied", "tiny-moe"])
@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
def test_ir_matches_torch_through_prefill_and_decode(shape, stateless, tmp_path):
    manifest = export_openvino(shape, tmp_path / "ir", weights="fp32", stateless=stateless)
    model = load(shape).model
    ids = np.random.default_rng(5).integers(0, model.config.vocab_size, (1, 12))
    got = run_ir(tmp_path / "ir", model.config, ids, split=4, stateful=not stateless)  # prefill 4 + 8 decode
    assert np.abs(got - torch_logits(model, ids)).max() <= 1e-3
    assert manifest["graph"] == ("stateless" if stateless else "stateful")
    assert manifest["io"]["states"] == (0 if stateless else 2 * model.config.num_hidden_layers)
    if not stateless:
        assert set(manifest["io"]["inputs"]) == {"input_ids", "attention_mask", "position_ids", "beam_idx"}
        assert set(manifest["io"]["outputs"]) == {"logits"}


def test_fp16_weights_are_the_default_and_stay_close(tmp_path):
    manifest = export_openvino("tiny-untied", tmp_path / "ir")
    assert manifest["precision"] == "fp16"
    model = load("tiny-untied").model
    ids = np.random.default_rng(6).integers(0, 512, (1, 8))
    diff = np.abs(run_ir(tmp_path / "ir", model.config, ids, 4, True) - torch_logits(model, ids)).max()
    assert diff <= 2e-2, diff
    fp32 = export_openvino("tiny-untied", tmp_path / "ir32", weights="fp32")
    assert manifest["files"]["openvino_model.bin"]["bytes"] < 0.6 * fp32["files"]["openvino_model.bin"]["bytes"]


@pytest.fixture(scope="module")
def gguf_ir(tmp_path_factory):
    """An untied tiny model with varied greedy output, as GGUF (so it has a tokenizer), exported."""

    tmp = tmp_path_factory.mktemp("ovgguf")
    with cache_at(str(tmp / "cache")):
        model = random_model("tiny-untied", seed=3, std=0.2)
        export_openvino(str(write_gguf(model, tmp / "m.gguf")), tmp / "ir", weights="fp32")
        return model, tmp / "ir"


PROMPT = [5, 17, 300, 2, 99, 41, 7, 8]


def torch_greedy(model, n):
    eos = (model.config.eos_token_id,)
    return list(generate(TorchStep(model), PROMPT, Sampling(max_new_tokens=n), eos_ids=eos))


def test_llm_pipeline_generates_like_torch(gguf_ir):
    import openvino_genai

    model, folder = gguf_ir
    assert (folder / "openvino_tokenizer.xml").exists() and (folder / "openvino_detokenizer.xml").exists()
    assert verify(folder).raw["tokenizer"]
    pipe = openvino_genai.LLMPipeline(str(folder), "CPU", **F32)
    config = pipe.get_generation_config()
    config.max_new_tokens, config.do_sample = 12, False
    ids = ov.Tensor(np.array([PROMPT], np.int64))
    result = pipe.generate(openvino_genai.TokenizedInputs(ids, ov.Tensor(np.ones((1, len(PROMPT)), np.int64))), config)
    expected = torch_greedy(model, 12)
    assert list(result.tokens[0])[: len(expected)] == expected and len(set(expected)) > 3


def test_optimum_intel_generates_like_torch(gguf_ir):
    import torch
    from optimum.intel import OVModelForCausalLM

    model, folder = gguf_ir
    ov_model = OVModelForCausalLM.from_pretrained(str(folder), ov_config=F32)
    eos = model.config.eos_token_id
    out = ov_model.generate(
        torch.tensor([PROMPT]),
        attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    expected = torch_greedy(model, 12)
    assert out[0, len(PROMPT) :].tolist()[: len(expected)] == expected


def test_format_all_writes_both_formats_from_one_load_and_they_agree(tmp_path):
    """One run, both formats: the ONNX folder (plain ORT) and the IR (LLMPipeline) give torch's tokens."""
    import openvino_genai

    from qwen_edge.cli.export import run
    from qwen_edge.runtime.engine import Engine

    model = random_model("tiny-untied", seed=7, std=0.2)
    gguf = write_gguf(model, tmp_path / "m.gguf")
    manifests = run(str(gguf), str(tmp_path / "out"), format="all", weights="fp32")
    assert [m["format"] for m in manifests] == ["onnx", "openvino"]
    assert manifests[0]["source"] == manifests[1]["source"]  # one load, one source digest
    expected = torch_greedy(model, 12)
    assert len(set(expected)) > 3
    eos = (model.config.eos_token_id,)
    onnx_tokens = list(
        generate(Engine.load(tmp_path / "out" / "onnx").step(), PROMPT, Sampling(max_new_tokens=12), eos)
    )
    assert onnx_tokens == expected
    pipe = openvino_genai.LLMPipeline(str(tmp_path / "out" / "openvino"), "CPU", **F32)
    config = pipe.get_generation_config()
    config.max_new_tokens, config.do_sample = 12, False
    ids = ov.Tensor(np.array([PROMPT], np.int64))
    result = pipe.generate(openvino_genai.TokenizedInputs(ids, ov.Tensor(np.ones((1, len(PROMPT)), np.int64))), config)
    assert list(result.tokens[0])[: len(expected)] == expected
