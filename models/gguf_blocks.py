"""GGUF block formats dequantized with torch, a chunk of blocks at a time.

The block layouts are ggml's (llama.cpp's ggml-common.h). gguf-py's numpy dequantizer, which
transformers also uses, spends ~10 s on the real 0.5B Q4_K_M in per-row Python; these kernels are
whole-tensor torch ops. Types not written here fall back to gguf-py.
"""

from __future__ import annotations

import numpy as np
import torch

# ggml type id -> (name, values per block, bytes per block)
TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
}

_CHUNK_VALUES = 1 << 22  # values dequantized per step: bounds the temporaries to ~100 MB


def _f16(b: torch.Tensor) -> torch.Tensor:
    """[n, 2] little-endian bytes -> [n] float32."""
    return b.contiguous().view(torch.float16).float().reshape(-1)


def _q8_0(b):
    return _f16(b[:, :2])[:, None] * b[:, 2:].contiguous().view(torch.int8).float()


def _q4_0(b):
    qs = b[:, 2:]
    q = torch.cat([qs & 0xF, qs >> 4], dim=1).float() - 8
    return _f16(b[:, :2])[:, None] * q


def _q5_0(b):
    qh, qs = b[:, 2:6], b[:, 6:]
    # value i takes bit i of the 32-bit qh as its fifth bit
    bits = (qh[:, :, None] >> torch.arange(8, dtype=torch.uint8)) & 1  # [n, 4 bytes, 8 bits]
    q = torch.cat([qs & 0xF, qs >> 4], dim=1) | (bits.reshape(-1, 32) << 4)
    return _f16(b[:, :2])[:, None] * (q.float() - 16)


def _k_scales(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K / Q5_K: eight 6-bit scales and mins packed in 12 bytes -> two [n, 8] tensors."""
    lo, hi = s[:, :4], s[:, 4:8]
    sc = torch.cat([lo & 63, (s[:, 8:] & 0xF) | ((lo >> 6) << 4)], dim=1)
    m = torch.cat([hi & 63, (s[:, 8:] >> 4) | ((hi >> 6) << 4)], dim=1)
    return sc.float(), m.float()


def _q4_k(b):
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, m = _k_scales(b[:, 4:16])
    qs = b[:, 16:].reshape(-1, 4, 1, 32)
    q = torch.cat([qs & 0xF, qs >> 4], dim=2).reshape(-1, 8, 32).float()  # sub-blocks: low, high per 32 bytes
    y = (d[:, None] * sc)[:, :, None] * q - (dmin[:, None] * m)[:, :, None]
    return y.reshape(-1, 256)


def _q5_k(b):
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, m = _k_scales(b[:, 4:16])
    qh, qs = b[:, 16:48], b[:, 48:].reshape(-1, 4, 1, 32)
    low = torch.cat([qs & 0xF, qs >> 4], dim=2).reshape(-1, 8, 32)
    high = (qh[:, None, :] >> torch.arange(8, dtype=torch.uint8)[None, :, None]) & 1  # sub-block s: bit s
    q = (low | (high << 4)).float()
    y = (d[:, None] * sc)[:, :, None] * q - (dmin[:, None] * m)[:, :, None]
    return y.reshape(-1, 256)


def _q6_k(b):
    ql, qh = b[:, :128].reshape(-1, 2, 2, 32), b[:, 128:192].reshape(-1, 2, 1, 32)
    sc = b[:, 192:208].contiguous().view(torch.int8).float().reshape(-1, 2, 4, 2, 1)
    d = _f16(b[:, 208:210])
    # per half of 128 values: rows ql[0:32] low, ql[32:64] low, ql[0:32] high, ql[32:64] high
    low = torch.cat([ql & 0xF, ql >> 4], dim=2)  # [n, 2, 4, 32]
    high = (qh >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8)[None, None, :, None]) & 3
    q = ((low | (high << 4)).float() - 32).reshape(-1, 2, 4, 2, 16)  # 16 values share a scale
    return (d[:, None, None, None, None] * sc * q).reshape(-1, 256)


KERNELS = {8: _q8_0, 2: _q4_0, 6: _q5_0, 12: _q4_k, 13: _q5_k, 14: _q6_k}


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """`raw` (the tensor's bytes, uint8) -> a tensor of `shape` in `dtype`."""
    name, block, size = TYPES[ggml_type]
    raw_t = torch.from_numpy(raw)
    if block == 1:
        src = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}[name]
        return raw_t.view(src).reshape(shape).to(dtype, copy=True)  # never a view of the file
    kernel = KERNELS.get(ggml_type)
    if kernel is None:
        from gguf import GGMLQuantizationType, dequantize

        values = dequantize(raw.reshape(shape[:-1] + (-1,)), GGMLQuantizationType(ggml_type))
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(dtype)
    blocks = raw_t.reshape(-1, size)
    out = torch.empty(blocks.shape[0], block, dtype=dtype)
    step = max(1, _CHUNK_VALUES // block)
    for i in range(0, blocks.shape[0], step):
        out[i : i + step] = kernel(blocks[i : i + step])
    return out.reshape(shape)
