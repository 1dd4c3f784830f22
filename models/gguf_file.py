"""Read a qwen2 / qwen2moe GGUF file: config from its metadata, tensors dequantized to float.

The file is parsed here (GGUFFile) and dequantized by gguf_blocks; this module also maps llama.cpp's
tensor names onto ours.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import gguf_blocks
from .qwen2 import Qwen2Config, UnsupportedModelError

GGUF_ARCHITECTURES = {"qwen2": "qwen2", "qwen2moe": "qwen2_moe"}

_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
    "ffn_gate_shexp": "mlp.shared_expert.gate_proj",
    "ffn_up_shexp": "mlp.shared_expert.up_proj",
    "ffn_down_shexp": "mlp.shared_expert.down_proj",
}
# metadata key (after "<arch>.") -> config field
_CONFIG_KEYS = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "expert_count": "num_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size",
    "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
}


_MAGIC = b"GGUF"
# metadata value type -> struct format of one item (8 = string, 9 = array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}


class _Corrupt(Exception):
    pass


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (ggml lists the fastest dimension first)
    ggml_type: int
    offset: int  # from the start of the file
    n_bytes: int


class GGUFFile:
    """The metadata and tensor table of a GGUF file (version 2 or 3, little-endian), read straight
    from a memory map. gguf-py's GGUFReader takes ~20 s on a Qwen2 file because it builds a numpy
    view per vocabulary string; here strings are decoded as read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable: torch wants that
            except ValueError:  # an empty file
                raise UnsupportedModelError(f"{self.path} is empty, not a GGUF file") from None
        self._pos = 0
        try:
            if self._take(4) != _MAGIC:
                raise _Corrupt("no GGUF magic")
            version, n_tensors, n_kv = self._unpack("<IQQ")
            if version not in (2, 3):
                raise _Corrupt(f"GGUF version {version} (qwen-edge reads versions 2 and 3, little-endian)")
            self.fields = {}
            for _ in range(self._count(n_kv, 12)):
                key = self._string()
                self.fields[key] = self._value(self._unpack("<I")[0])
            infos = [self._tensor_info() for _ in range(self._count(n_tensors, 24))]
            align = self.fields.get("general.alignment", 32)
            if not isinstance(align, int) or align <= 0 or align & (align - 1):
                raise _Corrupt(f"alignment {align!r}")
            data = -(-self._pos // align) * align
            self.tensors = []
            for name, dims, ggml_type, offset in infos:
                if ggml_type not in gguf_blocks.TYPES:
                    raise _Corrupt(f"tensor {name} has unknown type {ggml_type}")
                _, block, size = gguf_blocks.TYPES[ggml_type]
                shape = tuple(reversed(dims))
                count = math.prod(shape)
                if shape and shape[-1] % block or count % block:
                    raise _Corrupt(f"tensor {name} of shape {shape} does not fill its blocks")
                info = TensorInfo(name, shape, ggml_type, data + offset, count // block * size)
                if info.offset + info.n_bytes > len(self._map):
                    raise _Corrupt(f"tensor {name} lies past the end of the file")
                self.tensors.append(info)
        except (_Corrupt, struct.error, UnicodeDecodeError, OverflowError, ValueError) as e:
            self._map.close()
            raise UnsupportedModelError(f"{self.path} is not a readable GGUF file ({e})") from None

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._map):
            raise _Corrupt("truncated")
        b = self._map[self._pos : self._pos + n]
        self._pos += n
        return b

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return values

    def _count(self, n: int, least: int) -> int:
        """A count read from the file, refused when that many items could not fit in what is left
        (a corrupt count must not become a huge allocation)."""
        if n * least > len(self._map) - self._pos:
            raise _Corrupt(f"a count of {n} items runs past the end of the file")
        return n

    def _string(self) -> str:
        (n,) = self._unpack("<Q")
        return self._take(n).decode("utf-8")

    def _value(self, kind: int):
        if kind in _SCALARS:
            return self._unpack("<" + _SCALARS[kind])[0]
        if kind == 8:
            return self._string()
        if kind != 9:
            raise _Corrupt(f"unknown metadata type {kind}")
        item, n = self._unpack("<IQ")
        if item in _NUMPY:  # numeric arrays: one numpy read, not n values
            dt = np.dtype(_NUMPY[item])
            values = np.frombuffer(self._take(self._count(n, dt.itemsize) * dt.itemsize), dt)
            return values.tolist()
        return [self._value(item) for _ in range(self._count(n, 8))]

    def _tensor_info(self):
        name = self._string()
        (n_dims,) = self._unpack("<I")
        if n_dims > 4:
            raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
        dims = self._unpack(f"<{n_dims}Q")
        ggml_type, offset = self._unpack("<IQ")
        return name, dims, ggml_type, offset

    def raw(self, t: TensorInfo) -> np.ndarray:
        return np.frombuffer(self._map, np.uint8, t.n_bytes, t.offset)

    def release(self, t: TensorInfo) -> None:
        """Drop the file's pages of a tensor already read from this process's memory (they stay in
        the page cache): the whole mapped file would otherwise count in the process's resident
        memory on top of the weights (+1.1 GB at the 1.5B Q4_K_M's peak)."""
        start = t.offset - t.offset % mmap.PAGESIZE
        try:
            self._map.madvise(mmap.MADV_DONTNEED, start, t.offset + t.n_bytes - start)
        except (AttributeError, OSError, ValueError):  # not supported here: only the memory figure is worse
            pass


def _reader(path: Path) -> GGUFFile:
    return GGUFFile(path)


def _field(reader, key, default=None):
    return reader.fields.get(key, default)


def read_config(path: Path, reader=None) -> Qwen2Config:
    reader = reader or _reader(path)
    try:
        return _config(path, reader)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        if isinstance(e, UnsupportedModelError):
            raise
        raise UnsupportedModelError(
            f"{Path(path).name}: its metadata does not describe a Qwen2 model ({type(e).__name__}: {e})"
        ) from None


def _config(path: Path, reader) -> Qwen2Config:
    arch = _field(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{Path(path).name}: GGUF architecture {arch!r} is not supported; "
            f"qwen-edge reads {', '.join(GGUF_ARCHITECTURES)} GGUF files (Qwen2, Qwen2.5, Qwen2-MoE)"
        )
    d = {"model_type": GGUF_ARCHITECTURES[arch]}
    for key, name in _CONFIG_KEYS.items():
        value = _field(reader, f"{arch}.{key}")
        if value is not None:
            d[name] = value
    d["rms_norm_eps"] = round(float(d.get("rms_norm_eps", 1e-6)), 12)  # stored as float32: 9.99999997e-07
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise UnsupportedModelError(
            f"{Path(path).name} has no tokenizer (tokenizer.ggml.tokens): use a GGUF converted with its tokenizer"
        )
    d["vocab_size"] = len(reader.fields["tokenizer.ggml.tokens"])
    d["tie_word_embeddings"] = all(t.name != "output.weight" for t in reader.tensors)
    d["bos_token_id"] = _field(reader, "tokenizer.ggml.bos_token_id")
    d["eos_token_id"] = _field(reader, "tokenizer.ggml.eos_token_id")
    if _field(reader, f"{arch}.rope.scaling.type") == "yarn":
        d["rope_scaling"] = {
            "type": "yarn",
            "factor": _field(reader, f"{arch}.rope.scaling.factor"),
            "original_max_position_embeddings": _field(reader, f"{arch}.rope.scaling.original_context_length"),
        }
    return Qwen2Config.from_dict(d)


def our_name(gguf_name: str) -> str | None:
    """A dense Qwen2 tensor's name in this project (transformers' names); None for MoE experts."""
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    parts = gguf_name.split(".", 3)
    if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _BLOCK:
        return None
    return f"model.layers.{parts[1]}.{_BLOCK[parts[2]]}.{parts[3]}"


def read_tensors(path: Path, cfg: Qwen2Config, dtype=torch.float32, reader=None) -> dict[str, torch.Tensor]:
    """Every tensor dequantized, under this project's (transformers') names."""
    reader = reader or _reader(path)
    out, experts = {}, {}
    for t in tqdm(reader.tensors, desc="dequantizing GGUF", unit="tensor", leave=False, disable=None):
        w = gguf_blocks.dequantize(reader.raw(t), t.ggml_type, t.shape, dtype)
        reader.release(t)
        if t.name in _TOP:
            out[_TOP[t.name]] = w
            continue
        _, layer, kind, suffix = t.name.split(".", 3)
        prefix = f"model.layers.{layer}"
        if kind.endswith("_exps"):  # routed experts, [experts, out, in]
            experts[(prefix, kind)] = w
        elif kind == "ffn_gate_inp_shexp":  # stored as a vector, a [1, hidden] Linear here
            out[f"{prefix}.mlp.shared_expert_gate.{suffix}"] = w.reshape(1, -1)
        elif kind in _BLOCK:
            out[f"{prefix}.{_BLOCK[kind]}.{suffix}"] = w
        else:
            raise UnsupportedModelError(f"{Path(path).name}: unexpected tensor {t.name}")
    for prefix, _ in [k for k in experts if k[1] == "ffn_down_exps"]:
        gate, up = experts[(prefix, "ffn_gate_exps")], experts[(prefix, "ffn_up_exps")]
        out[f"{prefix}.mlp.experts.gate_up_proj"] = torch.cat([gate, up], dim=1)
        out[f"{prefix}.mlp.experts.down_proj"] = experts[(prefix, "ffn_down_exps")]
    return out
