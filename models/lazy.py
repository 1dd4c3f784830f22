"""A model's tensors read from its file one at a time, for exports that never hold the whole model.

Qwen2-7B is 30 GB in fp32 and 15 GB in fp16. The graph builders (export/openvino_graph.py,
export/ort_graph.py) read each weight once, by name; a quantizing export compresses each as it is
read, so memory is the compressed model plus one tensor, whatever the model's size. Dense Qwen2
only: MoE checkpoints store experts one by one (fused when loaded whole), which is not done here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import gguf_blocks, gguf_file, safetensors_file
from .qwen2 import Qwen2Config, Qwen2ForCausalLM, rope_inv_freq


class LazyError(ValueError):
    """This model cannot be read tensor by tensor (the caller loads it whole instead)."""


class LazyWeights(Mapping):
    """name -> tensor, read from the file on every access (nothing is kept)."""

    def __init__(self, readers: dict[str, Callable[[], torch.Tensor]]):
        self._readers = readers

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._readers[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)


@dataclass
class LazyModel:
    """What the graph builders read of a Qwen2ForCausalLM (config, rotary tables, weights by name),
    without its weights in memory."""

    config: Qwen2Config
    weights: LazyWeights
    inv_freq: torch.Tensor = field(init=False)
    rope_scale: float = field(init=False)

    def __post_init__(self):
        self.inv_freq, self.rope_scale = rope_inv_freq(self.config)

    def state_dict(self) -> LazyWeights:
        return self.weights


def expected_shapes(cfg: Qwen2Config) -> dict[str, tuple[int, ...]]:
    """Every weight our module holds for `cfg`, lm_head included even when tied (an alias then)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in Qwen2ForCausalLM(cfg).state_dict().items()}


def mismatch(expected: dict, got: dict, where: str) -> str | None:
    """The first difference between the weights a config needs and those a file holds, said plainly."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = [k for k in expected if k in got and tuple(got[k]) != tuple(expected[k])]
    for problem, names in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
        if names:
            more = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
            return f"{where}: weights do not match its config: {problem} {names[0]}{more}"
    return None


def _dense(cfg: Qwen2Config, where: str) -> None:
    if cfg.is_moe:
        raise LazyError(f"{where} is a Qwen2-MoE model: its experts are fused when loaded whole")


def _finish(cfg: Qwen2Config, readers: dict, shapes: dict, where: str) -> LazyModel:
    if cfg.tie_word_embeddings and "model.embed_tokens.weight" in readers:
        readers["lm_head.weight"] = readers["model.embed_tokens.weight"]
        shapes["lm_head.weight"] = shapes["model.embed_tokens.weight"]
    problem = mismatch(expected_shapes(cfg), shapes, where)
    if problem:
        raise LazyError(problem)
    return LazyModel(cfg, LazyWeights(readers))


def from_gguf(path: Path, cfg: Qwen2Config, dtype: torch.dtype, reader: gguf_file.GGUFFile) -> LazyModel:
    """Each tensor dequantized to `dtype` when read; its pages of the mapped file dropped after."""
    _dense(cfg, Path(path).name)

    def reading(t):
        def read():
            w = gguf_blocks.dequantize(reader.raw(t), t.ggml_type, t.shape, dtype)
            reader.release(t)
            return w

        return read

    readers, shapes = {}, {}
    for t in reader.tensors:
        name = gguf_file.our_name(t.name)
        if name is None:
            raise LazyError(f"{Path(path).name}: tensor {t.name} is not a dense Qwen2 weight")
        readers[name], shapes[name] = reading(t), t.shape
    return _finish(cfg, readers, shapes, Path(path).name)


def from_safetensors(folder: Path, files: list[Path], cfg: Qwen2Config, dtype: torch.dtype) -> LazyModel:
    """Each tensor read (and cast to `dtype` in chunks) from its file when asked for."""
    _dense(cfg, str(folder))

    def reading(path, base, name, info):
        def read():
            with open(path, "rb") as f:
                return safetensors_file.read_tensor(f, base, name, info, dtype, path)

        return read

    readers, shapes = {}, {}
    for path in files:
        with open(path, "rb") as f:
            base, entries = safetensors_file.read_header(f, path)
        for name, info in entries:
            if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.tie_word_embeddings):
                continue
            readers[name], shapes[name] = reading(path, base, name, info), tuple(info["shape"])
    return _finish(cfg, readers, shapes, str(folder))
