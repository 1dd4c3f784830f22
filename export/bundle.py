"""Export folders: staged in a temporary sibling, sealed with a manifest, renamed into place.

An interrupted export leaves no folder that looks finished: the final name only ever appears
with every file and the manifest (sha256 of each file) already written.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path

from qwen_edge.runtime import manifest as manifest_file
from qwen_edge.runtime.manifest import MANIFEST, sha256_file

log = logging.getLogger(__name__)

TOOLS = ("qwen-edge", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "gguf")


class OutputError(ValueError):
    """The output folder cannot be written as asked."""


# Hidden siblings an export stages in: .NAME.partial-PID-*, .NAME.old-PID-*, .NAME.export-PID-*.
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old|export)-(?P<pid>\d+)-[^/]*")


def check_output(out: str | Path, overwrite: bool = False, sources: Iterable[str | Path] = ()) -> Path:
    """`out`, resolved, once it is safe to write: absent, or (with `overwrite`) a qwen-edge export
    folder holding nothing but the files its manifest lists, and neither one of `sources` nor
    holding one. Anything else is refused before any work is done: --overwrite never deletes a
    file that an export did not write."""
    out = Path(out).resolve()
    for src in sources:
        src = Path(src).resolve()
        if src == out or out in src.parents:
            raise OutputError(f"{out} is the source being read ({src}): choose another -o")
    if not os.path.lexists(out):
        return out
    if not overwrite:
        raise OutputError(f"{out} already exists: choose another -o or pass --overwrite")
    if out.is_symlink() or not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder: --overwrite replaces only a qwen-edge export folder")
    try:
        listed = set(manifest_file.read(out).files) | {MANIFEST}
    except manifest_file.ManifestError:
        raise OutputError(
            f"{out} is not a qwen-edge export folder (no valid manifest.json): --overwrite replaces only an "
            "export; choose another -o or move that folder away"
        ) from None
    keep = set()
    for name in listed:  # a listed file's parent folders are part of the export too
        keep.update(p.as_posix() for p in Path(name).parents if p != Path("."))
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if (name not in listed and name not in keep) or (path.is_symlink() and name not in listed):
            raise OutputError(
                f"{out} holds {name}, which its manifest does not list: --overwrite replaces only what an export "
                "wrote; move that file away or choose another -o"
            )
    return out


def remove_stale(out: Path) -> None:
    """Remove the hidden staging folders that stopped exports of `out` left behind (their process
    is gone). A replaced folder set aside just before a crash is put back when `out` is missing."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        m = _SIBLING.fullmatch(path.name)
        if not m or m["name"] != out.name or not path.is_dir() or _alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not os.path.lexists(out):
            path.rename(out)
            log.warning("restored %s from %s, set aside by an export that was stopped", out, path.name)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s, left by an export that was stopped (process %s is gone)", path, m["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def sibling(out: Path, kind: str) -> Path:
    """A new hidden folder beside `out`, named for this process (see remove_stale)."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{os.getpid()}-", dir=out.parent))


@contextlib.contextmanager
def scratch(out: Path) -> Iterator[Path]:
    """A hidden working folder beside `out` for intermediate exports, removed afterwards (and by
    the next export of `out` if this process is killed: see remove_stale)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = sibling(out, "export")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged(out: str | Path, overwrite: bool = False, sources: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on success it becomes `out` (see
    check_output for what may be replaced; the swap is two renames, and the old folder is put
    back if the second fails)."""
    out = check_output(out, overwrite, sources)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = sibling(out, "partial")
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the finished folder private
    except OSError as e:
        raise OutputError(f"cannot write into {out.parent}: {e.strerror}; choose a writable -o") from None
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OutputError(
                    f"the disk under {out.parent} is full: free some space or choose another -o"
                ) from None
            raise
        except RuntimeError as e:  # OpenVINO reports a failed write as a stream error
            if "iostream error" not in str(e):
                raise
            free = shutil.disk_usage(out.parent).free / 1e6
            raise OutputError(f"writing into {out.parent} failed ({free:.0f} MB free): is the disk full?") from None
        check_output(out, overwrite, sources)  # unchanged while we worked?
        if os.path.lexists(out):
            old = sibling(out, "old")
            old.rmdir()
            out.rename(old)
            try:
                tmp.rename(out)
            except OSError:
                old.rename(out)
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def seal(folder: Path, manifest: dict) -> dict:
    """Write manifest.json with the size and sha256 of every other file in the folder (each made
    readable as the user's umask allows: temporary files come out 0600)."""
    files, mode = {}, 0o666 & ~_umask()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        path.chmod(mode)
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
