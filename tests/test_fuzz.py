"""Property-based tests: random and mutated inputs to the readers of untrusted files (safetensors
and GGUF headers, manifest.json) raise only the project's own error types, in bounded time and
memory; the streaming detokenizer's pieces always add up to the decoded text."""

import json
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_edge.models.shapes import random_model

from .cache_env import cache_at
from .gguf_writer import write_gguf

FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
MEMORY = 64 << 20  # peak bytes any one input may cost


def bounded(fn, *args):
    """fn(*args) under tracemalloc: the peak allocation stays under MEMORY."""
    tracemalloc.start()
    try:
        return fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MEMORY, f"{peak / 1e6:.0f} MB for one input"


def mutations(valid: bytes):
    """Bytes of a valid file with a few bytes overwritten, cut short, or with bytes inserted."""
    at = st.integers(0, len(valid) - 1)
    flip = st.tuples(at, st.binary(min_size=1, max_size=8)).map(
        lambda p: valid[: p[0]] + p[1] + valid[p[0] + len(p[1]) :]
    )
    cut = at.map(lambda n: valid[:n])
    insert = st.tuples(at, st.binary(min_size=1, max_size=16)).map(lambda p: valid[: p[0]] + p[1] + valid[p[0] :])
    return st.one_of(flip, cut, insert)


# safetensors -----------------------------------------------------------------------------------


def _valid_safetensors() -> bytes:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I64", "shape": [4], "data_offsets": [24, 56]},
    }
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + bytes(range(56))


def _read_safetensors(content: bytes):
    from qwen_edge.models.safetensors_file import SafetensorsError, read

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        path.write_bytes(content)
        try:
            bounded(read, path)
        except SafetensorsError:
            pass


@FAST
@given(st.one_of(st.binary(max_size=256), mutations(_valid_safetensors())))
def test_safetensors_reader_raises_only_its_own_error(content):
    _read_safetensors(content)


@FAST
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F16", "I8", "X9", 3]),
                "shape": st.one_of(st.lists(st.integers(-4, 2**40), max_size=3), st.text(max_size=3)),
                "data_offsets": st.one_of(st.lists(st.integers(-(2**63), 2**64), max_size=3), st.none()),
            }
        ),
        max_size=4,
    )
)
def test_safetensors_reader_on_random_headers(header):
    raw = json.dumps(header).encode()
    _read_safetensors(len(raw).to_bytes(8, "little") + raw + b"\0" * 64)


# GGUF ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_gguf(tmp_path_factory) -> bytes:
    return write_gguf(random_model("tiny", seed=1), tmp_path_factory.mktemp("g") / "m.gguf").read_bytes()


def test_gguf_header_reader_raises_only_its_own_error(valid_gguf):
    from qwen_edge.models import gguf_file
    from qwen_edge.models.qwen2 import UnsupportedModelError

    # The header (metadata: architecture, shapes, tokenizer) is the first ~part of the file: mutate there.
    head = valid_gguf[: min(len(valid_gguf), 64 << 10)]

    @FAST
    @given(mutations(head))
    def check(prefix):
        content = prefix + valid_gguf[len(head) :]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.gguf"
            path.write_bytes(content)
            try:
                bounded(lambda: gguf_file.read_config(path, gguf_file._reader(path)))
            except UnsupportedModelError:
                pass

    check()


# manifest.json ---------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
NAMES = st.one_of(
    st.sampled_from(["model.onnx", "config.json", "../x", "/etc/passwd", "a/../../b", "", ".", "sub/f", "a\\b", "x\0"]),
    st.text(max_size=12),
)
ENTRIES = st.one_of(
    JSON, st.fixed_dictionaries({"bytes": st.integers(-5, 10**12), "sha256": st.text("0123456789abcdef", max_size=70)})
)
MANIFESTS = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"format": st.one_of(st.sampled_from(["onnx", "openvino"]), JSON), "files": st.dictionaries(NAMES, ENTRIES)},
        optional={"model_file": st.one_of(NAMES, JSON), "runtime_file": NAMES, "weights_file": JSON, "config": JSON},
    ),
)


@FAST
@given(MANIFESTS, st.booleans())
def test_manifest_verifier_raises_only_its_own_error(manifest, full):
    from qwen_edge.runtime.manifest import ManifestError, verify

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "f"
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"graph")
        (folder / "config.json").write_text("{}")
        (folder / "manifest.json").write_text(json.dumps(manifest))
        try:
            bounded(verify, folder, full)
        except ManifestError:
            pass


@FAST
@given(st.binary(max_size=200))
def test_manifest_reader_on_random_bytes(content):
    from qwen_edge.runtime.manifest import ManifestError, read

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "manifest.json").write_bytes(content)
        with pytest.raises(ManifestError):
            read(tmp)


# streaming detokenizer -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    """The tiny models' byte-level BPE tokenizer (every byte a token: any id sequence is possible
    text, including split multi-byte characters)."""

    from qwen_edge.models.loaders import load
    from qwen_edge.runtime.tokenizer import Tokenizer

    tmp = tmp_path_factory.mktemp("tok")
    with cache_at(str(tmp / "cache")):
        return Tokenizer(load(str(write_gguf(random_model("tiny"), tmp / "m.gguf"))).tokenizer_dir)


def test_streamed_pieces_add_up_to_the_text_and_never_show_a_stop_string(byte_level):
    from qwen_edge.runtime.streaming import TextStreamer

    vocab = byte_level.vocab_size

    @settings(max_examples=300, deadline=2000)
    @given(st.lists(st.integers(0, vocab - 1), max_size=40), st.lists(st.text(min_size=1, max_size=3), max_size=2))
    def check(ids, stop):
        streamer = TextStreamer(byte_level.decode, tuple(stop))
        pieces = [streamer.put(t) for t in ids]
        pieces.append(streamer.end())
        shown, full = "".join(pieces), byte_level.decode(ids)
        assert all(isinstance(p, str) for p in pieces)
        if not stop:
            assert shown == full
        else:
            assert full.startswith(shown) and not any(s in shown for s in stop)

    check()
