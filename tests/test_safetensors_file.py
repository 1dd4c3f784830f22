"""Our plain-read safetensors reader against the reference implementation."""

import pytest
import torch
from safetensors.torch import save_file

from qwen_edge.models.safetensors_file import SafetensorsError, read


def test_reads_what_safetensors_writes(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d": torch.randn(2, 2).half(),
    }
    save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
    got = read(tmp_path / "m.safetensors")
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t)


def test_garbage_and_truncation_are_clear_errors(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"nope")
    with pytest.raises(SafetensorsError, match="not a valid safetensors file"):
        read(tmp_path / "x.safetensors")
    save_file({"a": torch.randn(100)}, tmp_path / "t.safetensors")
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[:-8])
    with pytest.raises(SafetensorsError, match="the tensors need 400 bytes of data, the file holds 392"):
        read(tmp_path / "t.safetensors")
