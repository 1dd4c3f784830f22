"""Write HF model folders (config.json + safetensors shards) of any size with random weights, one
tensor at a time: the 7B export tests and benchmarks need a 15 GB checkpoint that never sits in memory."""

import json
import struct
from pathlib import Path

import torch

from qwen_edge.models.lazy import expected_shapes

DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def write_random_hf_folder(cfg, folder: Path, seed: int = 0, std: float = 0.02, dtype=torch.bfloat16,
                           shard_bytes: int = 4 << 30) -> Path:  # fmt: skip
    """Normal(0, std) matrices, ones for norms, zeros for biases, in `dtype`, in shards of about
    `shard_bytes` with the index transformers writes beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    shapes = {n: s for n, s in expected_shapes(cfg).items() if not (n == "lm_head.weight" and cfg.tie_word_embeddings)}
    size = torch.tensor([], dtype=dtype).element_size()
    shards, current, used = [], [], 0
    for name, shape in shapes.items():
        nbytes = size * torch.Size(shape).numel()
        if current and used + nbytes > shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append((name, shape, nbytes))
        used += nbytes
    shards.append(current)
    gen = torch.Generator().manual_seed(seed)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {}, 0
        for name, shape, nbytes in shard:
            header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / file, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape, _ in shard:
                if name.endswith("norm.weight"):
                    t = torch.ones(shape, dtype=dtype)
                elif len(shape) == 1:
                    t = torch.zeros(shape, dtype=dtype)
                else:
                    t = torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=gen).to(dtype)
                f.write(t.contiguous().view(torch.uint8).numpy().tobytes())
    index = {"metadata": {"total_size": sum(n for s in shards for _, _, n in s)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
