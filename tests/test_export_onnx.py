"""ONNX export: the graphs compute what our torch model computes, and the folder keeps its contract."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from qwen_edge.export.bundle import OutputError
from qwen_edge.export.to_onnx import ExportError, export_onnx
from qwen_edge.models.loaders import load
from qwen_edge.models.qwen2 import UnsupportedModelError
from qwen_edge.models.shapes import random_model
from qwen_edge.runtime.manifest import ManifestError, verify

from .gguf_writer import write_gguf
from .onnx_driver import run_portable, run_static, session, torch_logits

TOL = 1e-3


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("shape", ["tiny", "tiny-untied", "tiny-gqa3", "tiny-moe"])
def test_portable_graph_matches_torch_through_prefill_and_decode(shape, tmp_path):
    export_onnx(shape, tmp_path / "out", graph="portable")
    model = load(shape).model
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, 13))
    got = run_portable(session(tmp_path / "out"), model.config, ids, split=5)  # prefill 5, then 8 decode steps
    assert np.abs(got - torch_logits(model, ids)).max() <= TOL


def test_portable_graph_takes_batch_two(tmp_path):
    export_onnx("tiny", tmp_path / "out", graph="portable")
    model = load("tiny").model
    ids = np.random.default_rng(1).integers(0, 512, (2, 7))
    got = run_portable(session(tmp_path / "out"), model.config, ids, split=4)
    assert np.abs(got - torch_logits(model, ids)).max() <= TOL


def test_folder_is_self_contained_and_sealed(tmp_path):
    gguf = write_gguf(random_model("tiny", seed=2), tmp_path / "tiny.gguf")
    manifest = export_onnx(str(gguf), tmp_path / "out", graph="portable")
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["source"]["kind"] == "gguf" and len(manifest["source"]["sha256"]) == 64
    assert manifest["io"]["inputs"]["past_key_values.0.key"] == ["batch", 2, "past_sequence", 16]
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["tools"])
    assert verify(out).graph == "portable"
    with open(out / "config.json", "a") as f:
        f.write(" ")
    with pytest.raises(ManifestError, match="config.json was altered"):
        verify(out)
    umask = os.umask(0)
    os.umask(umask)
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~umask)  # as mkdir makes it, not mkdtemp's 0700


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        export_onnx("tiny", out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="not a qwen-edge export folder"):  # --overwrite never deletes user files
        export_onnx("tiny", out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    out.rmdir()
    export_onnx("tiny", out)
    first = (out / "manifest.json").read_text()
    export_onnx("tiny", out, graph="portable", overwrite=True)  # an export is replaced
    assert (out / "manifest.json").read_text() != first and json.loads(first)["graph"] == "ort"


def test_failures_leave_nothing_behind(tmp_path):
    bad = tmp_path / "llama.gguf"
    write_gguf(random_model("tiny-untied"), bad, arch="llama")
    with pytest.raises(UnsupportedModelError, match="architecture 'llama'"):
        export_onnx(str(bad), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.gguf"]  # no out, no .out.partial-*


def test_unwritable_output_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write into"):
        export_onnx("tiny", tmp_path / "file" / "out")
    # A read-only file system (chmod does not stop root; /sys is mounted read-only).
    with pytest.raises(OutputError, match="cannot write into /sys"):
        export_onnx("tiny", "/sys/qwen-edge-out")


def test_openvino_reads_the_portable_graph(tmp_path):
    import openvino as ov

    export_onnx("tiny-untied", tmp_path / "out", graph="portable")
    model = load("tiny-untied").model
    # f32: on CPUs with bf16 units OpenVINO otherwise computes in bf16 by default.
    compiled = ov.Core().compile_model(str(tmp_path / "out" / "model.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ids = np.random.default_rng(4).integers(0, 512, (1, 6))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(6)[None]}
    feed.update(
        {f"past_key_values.{i}.{p}": np.zeros((1, 1, 0, 16), np.float32) for i in range(3) for p in ("key", "value")}
    )
    logits = compiled(feed)["logits"]
    assert np.abs(logits - torch_logits(model, ids)).max() <= TOL


def test_bad_options_are_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="--max-prompt .* must be between 1 and --max-context"):
        export_onnx("tiny", tmp_path / "out", graph="static", max_prompt=64, max_context=32)
    assert not (tmp_path / "out").exists()


def test_cli_export_and_its_errors(tmp_path):
    cmd = [sys.executable, "-m", "qwen_edge.cli.main", "export"]
    env = dict(os.environ, QWEN_EDGE_CACHE=str(tmp_path / "cache"))
    ok = subprocess.run([*cmd, "tiny", "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "ort graph" in ok.stdout and verify(tmp_path / "out")
    again = subprocess.run([*cmd, "tiny", "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    missing = subprocess.run([*cmd, str(tmp_path / "nope"), "-o", str(tmp_path / "o2")], capture_output=True, text=True)
    assert missing.returncode == 2 and "is not a folder, a .gguf file" in missing.stderr
    assert not (tmp_path / "o2").exists()


@pytest.fixture(scope="module")
def static_tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "out"
    manifest = export_onnx("tiny-untied", out, graph="static", max_prompt=8, max_context=32)
    return out, manifest


@pytest.mark.parametrize("n_prompt", [5, 8, 19], ids=["shorter", "equal", "longer"])
def test_static_graph_chunked_prefill_and_decode_match_torch(static_tiny, n_prompt):
    out, manifest = static_tiny
    model = load("tiny-untied").model
    ids = np.random.default_rng(n_prompt).integers(0, model.config.vocab_size, n_prompt + 8)
    got = run_static(session(out), session(out, "decode.onnx"), model.config, ids, n_prompt, 8, 32)
    expected = torch_logits(model, ids[None])[0, n_prompt - 1 :]
    assert np.abs(got - expected).max() <= TOL


def test_static_graphs_are_fully_static_and_share_weights(static_tiny):
    out, manifest = static_tiny
    for name, tokens in (("model.onnx", 8), ("decode.onnx", 1)):
        for io in [*session(out, name).get_inputs(), *session(out, name).get_outputs()]:
            assert all(isinstance(d, int) for d in io.shape), (name, io.name, io.shape)
        assert session(out, name).get_inputs()[0].shape == [1, tokens]
        io = manifest["io" if name == "model.onnx" else "decode_io"]
        assert [i.name for i in session(out, name).get_inputs()] == list(io["inputs"])
    assert not (out / "decode.onnx.data").exists()  # every weight lives once, in model.onnx.data
    assert manifest["decode_file"] == "decode.onnx" and manifest["shapes"] == {"max_prompt": 8, "max_context": 32}
    assert manifest["io"]["inputs"]["cache_position"] == [8] and manifest["decode_io"]["inputs"]["cache_position"] == [
        1
    ]


def test_fp16_graph_runs_on_cpu_close_to_fp32(tmp_path):
    manifest = export_onnx("tiny", tmp_path / "out", graph="portable", dtype="fp16")
    assert manifest["precision"] == "fp16"
    sess = session(tmp_path / "out")
    assert sess.get_inputs()[3].type == "tensor(float16)"  # KV cache in fp16: half the memory
    ids = np.array([[3, 141, 59, 26, 5]])
    feed = {i.name: np.zeros((1, 2, 0, 16), np.float16) for i in sess.get_inputs()[3:]}
    feed.update(input_ids=ids, attention_mask=np.ones_like(ids), position_ids=np.arange(5)[None])
    logits = sess.run(None, feed)[0].astype(np.float32)
    assert np.abs(logits - torch_logits(load("tiny").model, ids)).max() <= 2e-2


def genai_greedy(folder, prompt, new_tokens):
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def genai_agrees(folder, prompt, ours) -> bool:
    """onnxruntime-genai's greedy tokens are `ours` (generated without end-of-sequence ids), up to
    where it stops at one of its configured eos ids, which random models do hit."""
    eos = json.loads((Path(folder) / "genai_config.json").read_text())["model"]["eos_token_id"]
    got = genai_greedy(folder, prompt, len(ours))
    return bool(got) and got == ours[: len(got)] and (len(got) == len(ours) or got[-1] in np.atleast_1d(eos))


@pytest.mark.parametrize("shape", ["tiny", "tiny-untied", "tiny-gqa3"])
def test_ort_graph_matches_torch_and_uses_fused_kernels(shape, tmp_path):
    manifest = export_onnx(shape, tmp_path / "out", max_context=64)
    model = load(shape).model
    ids = np.random.default_rng(3).integers(0, model.config.vocab_size, (1, 13))
    got = run_portable(session(tmp_path / "out"), model.config, ids, split=5)
    assert np.abs(got - torch_logits(model, ids)).max() <= TOL
    ops = {n.op_type for n in onnx.load(tmp_path / "out" / "model.onnx", load_external_data=False).graph.node}
    assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization"} <= ops
    genai = json.loads((tmp_path / "out" / "genai_config.json").read_text())
    assert genai["model"]["type"] == "qwen2" and genai["search"]["max_length"] == 64
    assert manifest["graph"] == "ort" and "genai_config.json" in manifest["files"]


def test_ort_folder_generates_in_onnxruntime_genai_like_torch(tmp_path):
    from qwen_edge.models.reference import TorchStep
    from qwen_edge.runtime.generate import Sampling, generate

    export_onnx("tiny-untied", tmp_path / "out")
    model = load("tiny-untied").model
    prompt = [5, 17, 300, 2, 99, 41, 7]
    eos = (model.config.eos_token_id,)
    expected = list(generate(TorchStep(model), prompt, Sampling(max_new_tokens=16), eos_ids=eos))
    assert genai_greedy(tmp_path / "out", prompt, 16)[: len(expected)] == expected


def test_ort_graph_carries_moe_on_the_moe_kernel(tmp_path):
    """Qwen2-MoE on ONNX Runtime's MoE kernel (no longer refused): see tests/test_moe_graphs.py."""
    manifest = export_onnx("tiny-moe", tmp_path / "out")
    ops = {n.op_type for n in onnx.load(tmp_path / "out" / "model.onnx", load_external_data=False).graph.node}
    assert manifest["graph"] == "ort" and {"MoE", "GroupQueryAttention"} <= ops


def test_a_graph_with_symbolic_kv_sizes_runs_from_the_config(tmp_path):
    """onnxruntime-genai's model builder leaves the KV head size symbolic ("kv_cache_dim"); our
    runtime then takes the KV sizes from the config and decodes what the annotated graph decodes."""
    from qwen_edge.export import bundle
    from qwen_edge.runtime.engine import Engine
    from qwen_edge.runtime.generate import Sampling, generate

    manifest = export_onnx("tiny-gqa3", tmp_path / "a")
    prompt = [5, 17, 42, 99]
    want = list(generate(Engine.load(tmp_path / "a").step(), prompt, Sampling(max_new_tokens=6), eos_ids=()))
    proto = onnx.load(str(tmp_path / "a" / "model.onnx"), load_external_data=False)
    for i in proto.graph.input:
        if i.name.startswith("past_key_values."):
            dims = i.type.tensor_type.shape.dim
            dims[1].dim_param, dims[3].dim_param = "kv_heads", "kv_cache_dim"
    onnx.save(proto, str(tmp_path / "a" / "model.onnx"))
    (tmp_path / "a" / "manifest.json").unlink()
    bundle.seal(tmp_path / "a", {k: v for k, v in manifest.items() if k not in ("files", "tools")})
    got = list(generate(Engine.load(tmp_path / "a").step(), prompt, Sampling(max_new_tokens=6), eos_ids=()))
    assert got == want and len(got) == 6
