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


def verify(folder: str | Path) -> dict:
    """The manifest, once every listed file is present with its recorded size and sha256."""
    folder, manifest = Path(folder), read(folder)
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        if not path.exists():
            raise ManifestError(f"{folder}: {name} is missing; re-export the folder")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ManifestError(f"{folder}: {name} was altered since export (sha256 differs); re-export the folder")
    return manifest
