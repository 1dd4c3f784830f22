"""Read a .safetensors file tensor by tensor with plain reads (no memory map).

A mapped file stays resident as long as any tensor viewing it lives, and copying out of the map
holds both at once; reading each tensor into its own buffer holds exactly one copy of the model.
Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, data.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


CHUNK = 64 << 20  # bytes read per step when casting


class SafetensorsError(ValueError):
    """The file is not a readable safetensors file."""


def read(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """{name: tensor}; floating-point tensors cast to `dtype` as each is read (one model's worth of
    memory in the target dtype, plus one tensor)."""
    with open(path, "rb") as f:
        try:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        except (struct.error, ValueError) as e:
            raise SafetensorsError(f"{path} is not a safetensors file ({e})") from None
        base, out = 8 + size, {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in DTYPES:
                raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            start, end = info["data_offsets"]
            f.seek(base + start)
            stored = DTYPES[info["dtype"]]
            if end - start != math.prod(info["shape"]) * stored.itemsize:
                raise SafetensorsError(f"{path}: tensor {name}'s byte range does not match its shape")
            target = dtype if dtype is not None and stored.is_floating_point else stored
            if target == stored:
                tensor = torch.empty(info["shape"], dtype=stored)
                _read_exactly(f, tensor, path, name)
            else:  # cast a chunk at a time: never the whole tensor twice (the 0.5B's table: 545 MB in fp32)
                tensor = torch.empty(info["shape"], dtype=target)
                flat, step = tensor.view(-1), max(1, CHUNK // stored.itemsize)
                for at in range(0, flat.numel(), step):
                    chunk = torch.empty(min(step, flat.numel() - at), dtype=stored)
                    _read_exactly(f, chunk, path, name)
                    flat[at : at + chunk.numel()] = chunk
            out[name] = tensor
    return out


def _read_exactly(f, tensor: torch.Tensor, path: Path, name: str) -> None:
    want = tensor.numel() * tensor.element_size()
    if f.readinto(memoryview(tensor.view(torch.uint8).reshape(-1).numpy())) != want:
        raise SafetensorsError(f"{path}: tensor {name} is truncated")
