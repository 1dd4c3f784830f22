"""An export folder's manifest.json: what the folder is, and the sha256 of every file in it.

Every name in `files` is a plain relative path inside the folder (no `..`, no absolute path, no
link leaving the folder) of a regular file; the files a backend opens must be among them, and
nothing unlisted is ever read (see `listed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from . import user_cache
from .json_file import read_object

MANIFEST = "manifest.json"
Format = Literal["onnx", "openvino"]
Graph = Literal["ort", "portable", "static", "stateful", "stateless"]
GRAPHS: dict[str, tuple[str, ...]] = {
    "onnx": ("ort", "portable", "static"),
    "openvino": ("stateful", "stateless", "static"),
}
DEFAULT_MODEL_FILE = {"onnx": "model.onnx", "openvino": "openvino_model.xml"}
MAX_MANIFEST_BYTES = 16 << 20  # a real one is a few KB; a bigger one is not ours
_SHA256 = re.compile(r"[0-9a-f]{64}")
# top-level keys the code reads, and the type each must have when present
_TYPES = {"format": str, "graph": str, "model_file": str, "runtime_file": str, "decode_file": str,
          "weights_file": (str, type(None)), "config": dict, "shapes": dict, "io": dict, "source": dict}  # fmt: skip


class ManifestError(ValueError):
    """The folder is not an export, or its files are not the ones the manifest lists."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def read(folder: str | Path) -> Manifest:
    """The manifest, checked for shape: a JSON object whose `files` lists safe names with sizes and
    sha256s, and whose model files are among them. Nothing is hashed here (see `verify`)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise ManifestError(f"{folder} has no {MANIFEST}: it is not a qwen-edge export folder")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) or os.stat(path).st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is not a regular file of a manifest's size; re-export the folder")
    manifest = read_object(path, ManifestError, "re-export the folder")
    _check_shape(folder, manifest)
    try:
        return Manifest.parse(manifest)
    except ManifestError as e:
        raise ManifestError(f"{path}: {e}") from None


def _check_shape(folder: Path, manifest) -> None:
    def bad(what: str):
        return ManifestError(f"{folder / MANIFEST}: {what}; re-export the folder")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    for key, kind in _TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise bad(f"{key!r} has the wrong type")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise bad("it lists no files, so nothing could be verified")
    for name, entry in files.items():
        check_name(name, folder)
        ok = isinstance(entry, dict) and type(entry.get("bytes")) is int and entry["bytes"] >= 0
        if not ok or not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise bad(f"the entry for {name!r} needs 'bytes' (a whole number) and 'sha256' (64 hex digits)")
    for name in model_files(manifest):
        if name not in files:
            raise bad(f"the model file {name!r} is not listed with its sha256")


def check_name(name, folder: Path | str = ".") -> None:
    """A listed name must be a plain relative path: no absolute path, no `..`, no backslash."""
    parts = name.split("/") if isinstance(name, str) else None
    if not parts or name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(
            f"{Path(folder) / MANIFEST}: {name!r} is not a plain file name inside the folder; re-export the folder"
        )


def model_files(manifest: dict) -> list[str]:
    """The graph and weights files a backend opens for this folder."""
    names = [manifest.get(k) for k in ("model_file", "runtime_file", "decode_file", "weights_file")]
    if manifest.get("format") == "openvino":
        xml = manifest.get("model_file", "openvino_model.xml")
        names += [xml, xml.removesuffix(".xml") + ".bin"]
        if manifest.get("decode_file") and not manifest.get("weights_file"):
            names.append(manifest["decode_file"].removesuffix(".xml") + ".bin")
    elif manifest.get("format") == "onnx" and "model_file" not in manifest:
        names.append("model.onnx")
    return list(dict.fromkeys(n for n in names if n))


def listed(folder: str | Path, manifest: Manifest, name: str) -> Path:
    """The path of `name` in `folder`, only if the manifest lists it (so it was verified). A
    foreign folder (no manifest: optimum-cli's IR, opened by name for evaluation) lists nothing
    and is read as it is."""
    if manifest.foreign:
        check_name(name, folder)
    elif name not in manifest.files:
        raise ManifestError(f"{folder}: {name} is not listed in {MANIFEST}; re-export the folder")
    return Path(folder) / name


@dataclass(frozen=True)
class Manifest:
    """manifest.json, parsed once: what the folder holds and how it runs. `raw` keeps the JSON as
    written (recipe, report, budget, tries) for the commands that print or copy it."""

    format: Format
    graph: Graph
    model_file: str
    files: Mapping[str, Mapping] = field(default_factory=dict)
    precision: str | None = None
    runtime_file: str | None = None
    decode_file: str | None = None
    weights_file: str | None = None
    target: str | None = None
    config: Mapping = field(default_factory=dict)
    shapes: Mapping = field(default_factory=dict)
    io: Mapping = field(default_factory=dict)
    source: Mapping = field(default_factory=dict)
    raw: Mapping = field(default_factory=dict, repr=False)
    foreign: bool = False  # no manifest.json: nothing listed, nothing verified

    @classmethod
    def parse(cls, data: dict) -> Manifest:
        fmt = data.get("format")
        if fmt not in GRAPHS:
            raise ManifestError(f"format {fmt!r} is not one qwen-edge runs ({', '.join(GRAPHS)}); re-export the folder")
        graph = data.get("graph", "stateful" if fmt == "openvino" else None)
        if graph not in GRAPHS[fmt]:
            raise ManifestError(f"{fmt} graph {graph!r} is not one of {', '.join(GRAPHS[fmt])}; re-export the folder")
        known = {f.name for f in fields(cls)} - {"format", "graph", "raw", "foreign"}
        values = {k: data[k] for k in known if data.get(k) is not None}
        values.setdefault("model_file", DEFAULT_MODEL_FILE[fmt])
        values.setdefault("precision", data.get("dtype"))  # early exports named it dtype
        return cls(format=fmt, graph=graph, raw=data, **values)

    @classmethod
    def foreign_ir(cls) -> Manifest:
        """An OpenVINO folder with no manifest (optimum-cli's export): a stateful IR."""
        return cls(format="openvino", graph="stateful", model_file=DEFAULT_MODEL_FILE["openvino"], foreign=True)

    @property
    def max_positions(self) -> int | None:
        """Positions the model was trained for (config.json's max_position_embeddings)."""
        return self.config.get("max_position_embeddings")

    @property
    def max_context(self) -> int:
        """The longest sequence (prompt + reply) this folder serves, in every runtime: the export's
        --max-context (static KV slots; onnxruntime-genai's max_length), else the model's positions,
        else 32768 (a foreign IR without a config). (`genai_max_length`: the same setting in folders
        exported before it had one name.)"""
        shapes = self.shapes or {}
        return shapes.get("max_context") or shapes.get("genai_max_length") or self.max_positions or 32768


def _regular_file(folder: Path, name: str) -> os.stat_result:
    """The stat of a listed file that is a regular file inside the folder (links may not leave it)."""
    path = folder / name
    if not os.path.lexists(path):
        raise ManifestError(f"{folder}: {name} is missing; re-export the folder")
    root = folder.resolve()
    real = path.resolve()
    if root not in real.parents:
        raise ManifestError(f"{folder}: {name} points outside the folder; re-export the folder")
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise ManifestError(f"{folder}: {name} is not a regular file; re-export the folder")
    return st


def verify(folder: str | Path, full: bool = False) -> Manifest:
    """The manifest, once every listed file is present with its recorded size and sha256.

    Hashing a model takes about a second per GB, on every load. So a folder that verified once is
    remembered (a stamp in the user cache: each file's size, mtime, ctime, inode and device, and the
    manifest's sha256). While all of those are unchanged, later calls skip the hashing: any write to
    a file changes its ctime, which no user can set back (`touch -r` restores the mtime only).
    `full=True` always hashes."""
    folder, manifest = Path(folder), read(folder)
    files = manifest.files
    seen = {}
    for name, entry in files.items():
        st = _regular_file(folder, name)
        if st.st_size != entry["bytes"]:
            raise ManifestError(f"{folder}: {name} was altered since export (size differs); re-export the folder")
        seen[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    seen[MANIFEST] = sha256_file(folder / MANIFEST)
    stamp = _stamp_path(folder)
    if not full and stamp is not None and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == seen:
                return manifest
        except (OSError, ValueError):
            pass
    for name, entry in files.items():
        if sha256_file(folder / name) != entry["sha256"]:
            raise ManifestError(f"{folder}: {name} was altered since export (sha256 differs); re-export the folder")
    if stamp is not None:
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(seen))
            tmp.replace(stamp)
        except OSError:  # a read-only cache only costs the next load a full check
            pass
    return manifest


def _stamp_path(folder: Path) -> Path | None:
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
    return user_cache.root() / "verified" / f"{key}.json"
