"""What a backend is: the contract ONNX Runtime and OpenVINO both implement, for every graph kind
(ONNX `ort` / `portable` / `static`, OpenVINO stateful / stateless IR and the NPU's static pair),
and the one factory that loads them.

    backend = load(folder, manifest, device="CPU")
    cache = backend.new_cache()                   # one sequence's KV cache
    logits = cache.append(prompt_ids)             # prefill: the last position's logits
    logits = cache.append([next_id])              # decode
    draft = cache.fork(); draft.append(guesses)   # a copy to try tokens on
    cache.trim(n)                                 # keep the first n positions (roll back)
    a, b = backend.new_batch(2)                   # caches forward may run together
    backend.forward([a, b], [[7], [9]])           # several sequences, one call each step

The engine, evaluation, generation similarity and bench all load through `load`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .manifest import Manifest

# manifest format -> (backend name, module, class)
BACKENDS = {
    "onnx": ("onnxruntime", "qwen_edge.runtime.onnx_backend", "OnnxModel"),
    "openvino": ("openvino", "qwen_edge.runtime.openvino_backend", "OpenVINOModel"),
}


class KVCache(Protocol):
    length: int  # positions held
    capacity: int  # most positions it can hold

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:
        """Feed `ids` after the cached positions: the last position's logits ([vocab]), or every
        new position's ([len(ids), vocab]) from a backend loaded with all_logits unless `last`
        (a prompt's prefill: the OpenVINO IRs then skip projecting the other positions)."""
        ...

    def trim(self, n: int) -> None:
        """Keep the first n positions (0: empty); later ones are forgotten."""
        ...

    def fork(self) -> KVCache:
        """An independent cache holding the same positions."""
        ...


class Backend(Protocol):
    name: str  # "onnxruntime" or "openvino"
    manifest: Manifest
    capacity: int  # most positions one sequence can hold

    def new_cache(self) -> KVCache: ...

    def new_batch(self, rows: int) -> list[KVCache]:
        """`rows` caches that `forward` may run in one call (rows of one buffer on the ort graph;
        independent caches, run one after another, elsewhere)."""
        ...

    def forward(self, caches: Sequence[KVCache], ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Append ids[i] to caches[i] for every sequence; their logits, in order."""
        ...

    def profile(self, cache: KVCache, top: int = 10) -> list[dict]:
        """Top operator types by time ({op, seconds, share}), for a backend loaded with profile."""
        ...


def load(
    folder: str | Path,
    manifest: Manifest | None = None,
    device: str = "CPU",
    threads: int | None = None,
    config: dict | None = None,
    cache_dir: str | Path | None | bool = False,
    profile: bool = False,
    all_logits: bool = False,
    exact: bool = False,
) -> Backend:
    """The backend for `folder` as its manifest describes it (read, not verified, when not given;
    a folder with no manifest.json but an OpenVINO IR — optimum-cli's — is read as a stateful IR).
    `all_logits`: caches return every position's logits (evaluation), not only the last. `exact`:
    compute in f32 where the backend would lower precision by default (OpenVINO's CPU plugin: bf16
    compute and a u8 KV cache), so scores measure the weights; ONNX Runtime's CPU graphs are f32.
    `cache_dir` (OpenVINO's compiled models): False none, None the user cache, or a folder."""
    from .manifest import ManifestError, read

    folder = Path(folder)
    if manifest is None:
        if not (folder / "manifest.json").exists() and (folder / "openvino_model.xml").is_file():
            manifest = Manifest.foreign_ir()
        else:
            manifest = read(folder)
    if manifest.format not in BACKENDS:
        raise ManifestError(f"{folder}: no backend runs {manifest.format!r} folders")
    name, module, cls = BACKENDS[manifest.format]
    try:
        model = getattr(importlib.import_module(module), cls)
        return model(folder, manifest, device, threads, config or {}, cache_dir, profile, all_logits, exact)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != name:
            raise
        raise MissingPackage(f"{folder} is an {manifest.format} export and {INSTALL[name]}") from None


class MissingPackage(ImportError):
    """The backend a folder needs is not installed (the bare install has ONNX Runtime only)."""


INSTALL = {
    "openvino": "OpenVINO is not installed: pip install 'qwen-edge[openvino]'",
    "onnxruntime": "ONNX Runtime is not installed: pip install onnxruntime",
}


def forward_each(caches: Sequence[KVCache], ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Several sequences, one call each: what a backend without a batched graph does."""
    if len(caches) != len(ids):
        raise ValueError(f"{len(caches)} caches for {len(ids)} sequences")
    return [cache.append(seq) for cache, seq in zip(caches, ids, strict=True)]


def ranked(totals: dict[str, float], top: int) -> list[dict]:
    whole = sum(totals.values()) or 1.0
    return [
        {"op": op, "seconds": s, "share": s / whole} for op, s in sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    ]
