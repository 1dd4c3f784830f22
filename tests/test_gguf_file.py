"""Our GGUF reader against llama.cpp's own (gguf-py): same metadata, same tensor table, same
dequantized values for every block type we decode; and the tokenizer rebuilt from the metadata
against transformers' own GGUF tokenizer path."""

import json

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, dequantize

from qwen_edge.models import gguf_blocks, gguf_file, loaders
from qwen_edge.models.shapes import random_model

from .gguf_writer import write_gguf


def _random_blocks(ggml_type: int, n: int, seed: int) -> np.ndarray:
    """n random blocks whose fp16 scale fields hold sane values (random bytes there could be NaN)."""
    _, _, size = gguf_blocks.TYPES[ggml_type]
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, (n, size), dtype=np.uint8)
    scales = rng.uniform(-0.05, 0.05, (n, 2)).astype(np.float16).view(np.uint8)
    name = gguf_blocks.TYPES[ggml_type][0]
    at = {"Q6_K": [208], "Q4_K": [0, 2], "Q5_K": [0, 2]}.get(name, [0])  # where the fp16 fields sit
    for i, off in enumerate(at):
        b[:, off : off + 2] = scales[:, 2 * i : 2 * i + 2]
    return b


@pytest.mark.parametrize("name", ["Q4_0", "Q5_0", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_each_block_kernel_matches_gguf_py(name):
    ggml_type = GGMLQuantizationType[name].value
    assert ggml_type in gguf_blocks.KERNELS
    _, block, _ = gguf_blocks.TYPES[ggml_type]
    raw = _random_blocks(ggml_type, 4096, seed=ggml_type)
    shape = (4096 * block // 512, 512)
    ref = dequantize(raw.reshape(shape[0], -1), GGMLQuantizationType(ggml_type)).astype(np.float32)
    ours = gguf_blocks.dequantize(raw.reshape(-1), ggml_type, shape, torch.float32).numpy()
    np.testing.assert_array_equal(ours, ref)
    half = gguf_blocks.dequantize(raw.reshape(-1), ggml_type, shape, torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, torch.from_numpy(ref).half())


def test_chunking_does_not_change_values(monkeypatch):
    raw = _random_blocks(12, 40, seed=1).reshape(-1)
    whole = gguf_blocks.dequantize(raw, 12, (40, 256), torch.float32)
    monkeypatch.setattr(gguf_blocks, "_CHUNK_VALUES", 256 * 3)  # 3 blocks a step, a ragged last step
    assert torch.equal(gguf_blocks.dequantize(raw, 12, (40, 256), torch.float32), whole)


@pytest.mark.parametrize("shape", ["tiny", "tiny-moe"])
def test_metadata_and_tensor_table_match_gguf_py(shape, tmp_path):
    path = write_gguf(random_model(shape), tmp_path / "m.gguf", "qwen2moe" if "moe" in shape else "qwen2")
    ours, ref = gguf_file.GGUFFile(path), GGUFReader(str(path))
    ref_fields = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert ours.fields.keys() == ref_fields.keys()
    for key, value in ref_fields.items():
        assert ours.fields[key] == pytest.approx(value) if isinstance(value, float) else ours.fields[key] == value
    assert [(t.name, t.shape, t.ggml_type, t.offset, t.n_bytes) for t in ours.tensors] == [
        (t.name, tuple(int(d) for d in reversed(t.shape)), int(t.tensor_type), int(t.data_offset), int(t.n_bytes))
        for t in ref.tensors
    ]
    for a, b in zip(ours.tensors, ref.tensors, strict=True):
        np.testing.assert_array_equal(ours.raw(a), np.asarray(b.data).reshape(-1).view(np.uint8))


def test_tokenizer_is_the_one_transformers_builds(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))
    model = random_model("tiny")
    path = write_gguf(model, tmp_path / "m.gguf")
    ours = loaders.gguf_tokenizer(path, None, model.config)
    ref_dir = tmp_path / "ref"
    AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name).save_pretrained(ref_dir)
    assert json.loads((ours / "tokenizer.json").read_text()) == json.loads((ref_dir / "tokenizer.json").read_text())
    assert (ours / "chat_template.jinja").read_text() == (ref_dir / "chat_template.jinja").read_text()
    config, ref_config = (json.loads((d / "tokenizer_config.json").read_text()) for d in (ours, ref_dir))
    ref_config.pop("is_local")  # from_pretrained's note that it read a local folder
    assert config == ref_config


@pytest.mark.slow
def test_real_gguf_tensors_decode_as_gguf_py_does(real_gguf):
    ours, ref = gguf_file.GGUFFile(real_gguf), GGUFReader(str(real_gguf))
    seen = set()
    for a, b in zip(ours.tensors, ref.tensors, strict=True):
        rows = min(a.shape[0], 48) if len(a.shape) > 1 else a.shape[0]
        row_bytes = a.n_bytes // a.shape[0] if len(a.shape) > 1 else a.n_bytes
        part = ours.raw(a)[: rows * row_bytes]
        shape = (rows, *a.shape[1:]) if len(a.shape) > 1 else a.shape
        want = np.asarray(dequantize(b.data[:rows] if len(a.shape) > 1 else b.data, b.tensor_type), np.float32)
        got = gguf_blocks.dequantize(part, a.ggml_type, shape, torch.float32).numpy()
        np.testing.assert_array_equal(got, want.reshape(shape), err_msg=a.name)
        seen.add(gguf_blocks.TYPES[a.ggml_type][0])
    assert {"Q4_K", "Q5_0", "Q6_K", "Q8_0", "F32"} <= seen
