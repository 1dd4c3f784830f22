"""Every way of naming MODEL, and every way of getting it wrong."""

import json

import pytest
import torch
from safetensors.torch import save_file

from qwen_edge.models.loaders import ModelSourceError, load
from qwen_edge.models.qwen2 import UnsupportedModelError
from qwen_edge.models.shapes import random_model, shape_config
from qwen_edge.runtime.tokenizer import Tokenizer

from .gguf_writer import write_gguf


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def logits(model, ids):
    with torch.no_grad():
        return model(ids, torch.arange(ids.shape[1])[None], torch.ones_like(ids), model.empty_cache(1))[0]


def save_hf_folder(model, folder, per_expert=False):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        weights.pop("lm_head.weight")
    if per_expert:  # the layout of checkpoints on the hub: one tensor per expert
        for name in [k for k in weights if k.endswith("experts.gate_up_proj")]:
            prefix = name.rsplit(".", 1)[0]
            gate_up, down = weights.pop(name), weights.pop(f"{prefix}.down_proj")
            for e in range(gate_up.shape[0]):
                gate, up = gate_up[e].chunk(2)
                weights[f"{prefix}.{e}.gate_proj.weight"] = gate.contiguous()
                weights[f"{prefix}.{e}.up_proj.weight"] = up.contiguous()
                weights[f"{prefix}.{e}.down_proj.weight"] = down[e].contiguous()
    save_file(weights, folder / "model.safetensors")
    return folder


IDS = torch.tensor([[5, 17, 300, 2, 99, 41]])


@pytest.mark.parametrize("shape", ["tiny", "tiny-untied", "tiny-moe"])
def test_hf_folder_round_trip(shape, tmp_path):
    model = random_model(shape, seed=3)
    loaded = load(str(save_hf_folder(model, tmp_path / "m", per_expert=True)))
    assert loaded.source["kind"] == "hf" and loaded.config == model.config and len(loaded.source["sha256"]) == 64
    tied = loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    assert tied == model.config.tie_word_embeddings
    assert torch.equal(logits(loaded.model, IDS), logits(model, IDS))


@pytest.mark.parametrize("shape", ["tiny", "tiny-untied", "tiny-moe"])
def test_gguf_round_trip_with_tokenizer(shape, tmp_path):
    model = random_model(shape, seed=4)
    loaded = load(str(write_gguf(model, tmp_path / "m.gguf", "qwen2moe" if "moe" in shape else "qwen2")))
    assert loaded.source["kind"] == "gguf" and len(loaded.source["sha256"]) == 64
    assert loaded.config.tie_word_embeddings == model.config.tie_word_embeddings
    assert torch.equal(logits(loaded.model, IDS), logits(model, IDS))
    tok = Tokenizer(loaded.tokenizer_dir)
    assert tok.decode(tok.encode("the thin hen")) == "the thin hen"
    assert tok.token_to_id("<|im_end|>") in tok.eos_token_ids
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")


def test_registry_shape_gives_random_weights():
    loaded = load("tiny", seed=7)
    assert loaded.source == {"kind": "random", "shape": "tiny", "seed": 7} and loaded.tokenizer_dir is None
    assert torch.equal(logits(loaded.model, IDS), logits(load("tiny", seed=7).model, IDS))


def test_other_gguf_architecture_is_refused(tmp_path):
    path = write_gguf(random_model("tiny-untied"), tmp_path / "llama.gguf", arch="llama")
    with pytest.raises(UnsupportedModelError, match="GGUF architecture 'llama' is not supported.*qwen2"):
        load(str(path))


def test_file_that_is_not_gguf(tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(UnsupportedModelError, match="not a readable GGUF file"):
        load(str(tmp_path / "x.gguf"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelSourceError, match="neither a GGUF file nor an HF model folder"):
        load(str(tmp_path / "notes.txt"))


def test_other_architecture_folder_is_refused(tmp_path):
    folder = save_hf_folder(random_model("tiny"), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="llama")))
    with pytest.raises(UnsupportedModelError, match="model_type 'llama' is not supported.*qwen2, qwen2_moe"):
        load(str(folder))


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(shape_config("tiny").to_dict()))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 this would run code if unpickled")
    with pytest.raises(ModelSourceError, match="only pickle weights \\(pytorch_model.bin\\).*never loads"):
        load(str(folder))


def test_missing_and_mismatched_weights_are_named(tmp_path):
    model = random_model("tiny")
    folder = save_hf_folder(model, tmp_path / "m")
    weights = {k: v for k, v in model.state_dict().items() if "layers.1.mlp.up_proj" not in k and k != "lm_head.weight"}
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ModelSourceError, match="missing model.layers.1.mlp.up_proj.weight"):
        load(str(folder))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="no \\*.safetensors weights"):
        load(str(folder))
    (folder / "config.json").unlink()
    with pytest.raises(ModelSourceError, match="no config.json"):
        load(str(folder))


def test_unknown_names_and_unreachable_hub():
    with pytest.raises(ModelSourceError, match="not a folder, a .gguf file, a hub id.*Qwen2-0.5B"):
        load("./no/such/thing")
    with pytest.raises(ModelSourceError, match="could not get 'Qwen/Qwen2-0.5B' from the hub"):
        load("Qwen/Qwen2-0.5B")


def test_tokenizer_from_elsewhere_for_any_source(tmp_path):
    from qwen_edge.models.loaders import tokenizer_folder

    gguf = write_gguf(random_model("tiny", seed=2), tmp_path / "m.gguf")
    folder = tokenizer_folder(gguf, shape_config("tiny"))
    loaded = load("tiny", tokenizer=str(gguf))
    assert loaded.tokenizer_dir == folder and loaded.source["tokenizer"] == str(gguf)
    assert load("tiny", tokenizer=str(folder)).tokenizer_dir == folder  # a folder holding tokenizer.json
    assert load("tiny").tokenizer_dir is None  # the test shapes' 512 ids fit no real tokenizer
    with pytest.raises(ModelSourceError, match=r"has 512 tokens, more than the model's 300: give the tokenizer"):
        tokenizer_folder(folder, shape_config("tiny", vocab_size=300))
    with pytest.raises(ModelSourceError, match="give a folder holding tokenizer.json, a .gguf file or a known model"):
        load("tiny", tokenizer=str(tmp_path))


@pytest.mark.slow
def test_a_real_shape_takes_text_with_the_real_tokenizer(real_gguf, tmp_path, monkeypatch):
    """Random weights at a real shape measure speed, so they still need Qwen2.5's tokenizer: the
    fetched real model's (here the user cache, where real_gguf put it)."""
    from qwen_edge.models.fetch import cache_dir
    from qwen_edge.quantize.pipeline import build
    from qwen_edge.runtime.engine import Engine

    monkeypatch.setenv("QWEN_EDGE_CACHE", str(real_gguf.parents[1]))
    assert cache_dir() == real_gguf.parents[1]
    [manifest] = build("Qwen2.5-0.5B", tmp_path / "ir", format="openvino")
    assert manifest["tokenizer"] and manifest["source"]["tokenizer"] == "qwen2.5-coder-0.5b-instruct"
    result = Engine.load(tmp_path / "ir").session().generate("def fib(n):", max_new_tokens=3)
    assert len(result.token_ids) == 3 and result.text
