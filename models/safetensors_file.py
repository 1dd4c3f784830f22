"""Read a .safetensors file tensor by tensor with plain reads (no memory map).

A mapped file stays resident as long as any tensor viewing it lives, and copying out of the map
holds both at once; reading each tensor into its own buffer holds exactly one copy of the model.
Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, data.
"""

from __future__ import annotations

import json
import math
import os
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


MAX_HEADER = 100 << 20  # the safetensors library's own limit


def read_header(f, path: Path) -> tuple[int, list[tuple[str, dict]]]:
    """(where the data starts, [(name, entry)] in file order), once the header is checked as the
    safetensors library checks it: a JSON object of known dtypes and whole-number shapes whose
    byte ranges tile the data exactly (no gaps, no overlaps, none past the end), each range being
    shape x dtype size bytes long."""
    size_on_disk = os.fstat(f.fileno()).st_size

    def bad(what: str) -> SafetensorsError:
        return SafetensorsError(f"{path} is not a valid safetensors file: {what}")

    raw = f.read(8)
    if len(raw) != 8:
        raise bad("shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", raw)
    if size > min(MAX_HEADER, size_on_disk - 8):
        raise bad(f"header length {size} is past the end of the file or over {MAX_HEADER >> 20} MB")
    try:
        header = json.loads(f.read(size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in DTYPES:
            raise bad(f"tensor {name} has no supported dtype ({', '.join(DTYPES)})")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"tensor {name}'s shape is not a list of whole numbers >= 0")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
            raise bad(f"tensor {name}'s data_offsets are not two whole numbers")
        if math.prod(shape) * DTYPES[info["dtype"]].itemsize != offsets[1] - offsets[0]:
            raise bad(f"tensor {name}'s byte range does not match its shape")
        entries.append((name, info))
    end = 0
    for name, info in sorted(entries, key=lambda e: e[1]["data_offsets"]):
        start, stop = info["data_offsets"]
        if start != end:
            raise bad(f"tensor {name}'s data does not start where the previous one ends ({start} != {end})")
        end = stop
    if 8 + size + end > size_on_disk:
        raise bad(f"the tensors need {end} bytes of data, the file holds {size_on_disk - 8 - size}")
    return 8 + size, entries


def read(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """{name: tensor}; floating-point tensors cast to `dtype` as each is read (one model's worth of
    memory in the target dtype, plus one tensor)."""
    with open(path, "rb") as f:
        base, entries = read_header(f, path)
        return {name: read_tensor(f, base, name, info, dtype, path) for name, info in entries}


def read_tensor(f, base: int, name: str, info: dict, dtype: torch.dtype | None, path: Path) -> torch.Tensor:
    """One tensor of an open file whose header `read_header` checked, cast to `dtype` if floating."""
    start, _ = info["data_offsets"]
    f.seek(base + start)
    stored = DTYPES[info["dtype"]]
    target = dtype if dtype is not None and stored.is_floating_point else stored
    if target == stored:
        tensor = torch.empty(info["shape"], dtype=stored)
        _read_exactly(f, tensor, path, name)
        return tensor
    # cast a chunk at a time: never the whole tensor twice (the 0.5B's table: 545 MB in fp32)
    tensor = torch.empty(info["shape"], dtype=target)
    flat, step = tensor.view(-1), max(1, CHUNK // stored.itemsize)
    for at in range(0, flat.numel(), step):
        chunk = torch.empty(min(step, flat.numel() - at), dtype=stored)
        _read_exactly(f, chunk, path, name)
        flat[at : at + chunk.numel()] = chunk
    return tensor


def _read_exactly(f, tensor: torch.Tensor, path: Path, name: str) -> None:
    want = tensor.numel() * tensor.element_size()
    if f.readinto(memoryview(tensor.view(torch.uint8).reshape(-1).numpy())) != want:
        raise SafetensorsError(f"{path}: tensor {name} is truncated")
