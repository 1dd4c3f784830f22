"""Export folders: staged in a temporary sibling, sealed with a manifest, renamed into place.

An interrupted export leaves no folder that looks finished: the final name only ever appears
with every file and the manifest (sha256 of each file) already written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from qwen_edge.runtime.manifest import MANIFEST, sha256_file

TOOLS = ("qwen-edge", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "gguf")


class OutputError(ValueError):
    """The output folder cannot be written as asked."""


@contextlib.contextmanager
def staged(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on success it becomes `out`."""
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists: choose another -o or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the finished folder private
    except OSError as e:
        raise OutputError(f"cannot write into {out.parent}: {e.strerror}; choose a writable -o") from None
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seal(folder: Path, manifest: dict) -> dict:
    """Write manifest.json with the size and sha256 of every other file in the folder."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {**manifest, "tools": tool_versions(), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def tool_versions() -> dict:
    versions = {}
    for name in TOOLS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions
