"""Read a .safetensors file tensor by tensor with plain reads (no memory map).

A mapped file stays resident as long as any tensor viewing it lives, and copying out of the map
holds both at once; reading each tensor into its own buffer holds exactly one copy of the model.
Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, data.
"""

from __future__ import annotations

import json
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
            tensor = torch.empty(info["shape"], dtype=DTYPES[info["dtype"]])
            f.seek(base + start)
            if f.readinto(memoryview(tensor.view(torch.uint8).reshape(-1).numpy())) != end - start:
                raise SafetensorsError(f"{path}: tensor {name} is truncated")
            out[name] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return out
