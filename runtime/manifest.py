"""An export folder's manifest.json: what the folder is, and the sha256 of every file in it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """The folder is not an export, or its files are not the ones the manifest lists."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def read(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise ManifestError(f"{folder} has no {MANIFEST}: it is not a qwen-edge export folder")
    return json.loads(path.read_text())


def verify(folder: str | Path, full: bool = False) -> dict:
    """The manifest, once every listed file is present with its recorded size and sha256.

    Hashing a model takes about a second per GB, on every load. So a folder that verified once is
    remembered (a stamp in the user cache: each file's size and mtime, and the manifest's sha256);
    while nothing changed, later calls check sizes and mtimes only. `full=True` always hashes."""
    folder, manifest = Path(folder), read(folder)
    files = manifest.get("files", {})
    for name, entry in files.items():
        path = folder / name
        if not path.exists():
            raise ManifestError(f"{folder}: {name} is missing; re-export the folder")
        if path.stat().st_size != entry["bytes"]:
            raise ManifestError(f"{folder}: {name} was altered since export (size differs); re-export the folder")
    stamp = _stamp_path(folder)
    seen = {name: [(folder / name).stat().st_size, (folder / name).stat().st_mtime_ns] for name in files}
    seen[MANIFEST] = sha256_file(folder / MANIFEST)
    if not full and stamp is not None and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == seen:
                return manifest
        except ValueError:
            pass
    for name, entry in files.items():
        if sha256_file(folder / name) != entry["sha256"]:
            raise ManifestError(f"{folder}: {name} was altered since export (sha256 differs); re-export the folder")
    if stamp is not None:
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_suffix(".tmp")
            tmp.write_text(json.dumps(seen))
            tmp.replace(stamp)
        except OSError:  # a read-only cache only costs the next load a full check
            pass
    return manifest


def _stamp_path(folder: Path) -> Path | None:
    import os

    root = os.environ.get("QWEN_EDGE_CACHE")
    if not root:
        try:
            from platformdirs import user_cache_dir
        except ImportError:
            return None
        root = user_cache_dir("qwen-edge")
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
    return Path(root) / "verified" / f"{key}.json"
