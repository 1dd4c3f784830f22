"""Where qwen-edge keeps what it can rebuild: fetched models, tokenizers, verification stamps and
OpenVINO's compiled models. QWEN_EDGE_CACHE if set, else the user cache dir (~/.cache/qwen-edge
on Linux)."""

from __future__ import annotations

import os
from pathlib import Path

# OpenVINO's compiled blob holds a copy of the weights (1.1 GB for the 1.5B INT4 IR), so the cache
# is kept to this size, the oldest blobs going first.
OPENVINO_CACHE_BYTES = 6 << 30


def root() -> Path:
    if os.environ.get("QWEN_EDGE_CACHE"):
        return Path(os.environ["QWEN_EDGE_CACHE"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("qwen-edge"))


def openvino_cache(budget: int = OPENVINO_CACHE_BYTES) -> Path:
    """The compiled-model cache folder (OpenVINO's CACHE_DIR), pruned to `budget` bytes."""
    folder = root() / "openvino"
    folder.mkdir(parents=True, exist_ok=True)
    blobs = []
    for where, _, names in os.walk(folder):  # one subfolder per device and compile properties
        for name in names:
            st = os.stat(os.path.join(where, name), follow_symlinks=False)
            blobs.append((st.st_mtime, st.st_size, os.path.join(where, name)))
    kept = 0
    for _, size, path in sorted(blobs, reverse=True):
        kept += size
        if kept > budget:
            Path(path).unlink(missing_ok=True)
    return folder
