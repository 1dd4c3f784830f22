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


def write_model_files(cfg, src: Path | None, folder: Path) -> None:
    """config.json, generation_config.json and the tokenizer files from `src` (chat template inside
    tokenizer_config.json, where transformers, optimum and onnxruntime-genai all look)."""
    (folder / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    if src is not None:
        for name in ("tokenizer.json", "vocab.json", "merges.txt", "generation_config.json"):
            if (src / name).exists():
                shutil.copyfile(src / name, folder / name)
        tok_config = json.loads((src / "tokenizer_config.json").read_text())
        if (src / "chat_template.jinja").exists():
            tok_config["chat_template"] = (src / "chat_template.jinja").read_text()
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
    if not (folder / "generation_config.json").exists():
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
