import os
from pathlib import Path

import pytest

from qwen_edge.runtime import user_cache

DATA = Path(__file__).resolve().parent / "data"  # vendored: see tests/data/README.md
USER_CACHE = user_cache.root()  # read before any test changes QWEN_EDGE_CACHE


@pytest.fixture(scope="session")
def shared_tokenizer(tmp_path_factory) -> Path:
    """The Qwen2.5 tokenizer (official vocabulary, Instruct chat template), from tests/data: an
    independent reference for the tokenizer our loader rebuilds from a GGUF."""
    import gzip
    import shutil

    folder = tmp_path_factory.mktemp("qwen2.5-tokenizer")
    with gzip.open(DATA / "qwen2.5-tokenizer" / "tokenizer.json.gz", "rb") as src:
        (folder / "tokenizer.json").write_bytes(src.read())
    shutil.copyfile(DATA / "qwen2.5-tokenizer" / "tokenizer_config.json", folder / "tokenizer_config.json")
    return folder


@pytest.fixture(scope="session")
def wikitext_lines() -> list[str]:
    """300 lines of real prose (WikiText-2 test, CC BY-SA 3.0; tests/data/README.md)."""
    text = (DATA / "wikitext-2-test-300.txt").read_text(encoding="utf-8")
    return [ln for ln in text.split("\n") if ln.strip()]


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct GGUF, fetched once into the user cache: the one the
    session started with, whatever a test sets QWEN_EDGE_CACHE to later."""
    from qwen_edge.models.fetch import fetch

    return fetch(dest_dir=USER_CACHE / "models")


WINDOW, CAPACITY = 8, 64  # the static folders' prompt window and KV slots


@pytest.fixture(scope="session")
def export_kinds(tmp_path_factory):
    """(torch model, folder) with every folder kind the exporter writes for one tiny model:
    openvino (stateful), openvino-stateless, npu (static pair, INT4), ort, portable, static."""
    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.export.to_openvino import export_openvino
    from qwen_edge.models.shapes import random_model
    from qwen_edge.quantize.recipes import compress_npu

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("kinds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN_EDGE_CACHE", str(tmp / "cache"))
        model = random_model("tiny-untied", seed=4, std=0.1)
        gguf = str(write_gguf(model, tmp / "m.gguf"))
        export_openvino(gguf, tmp / "openvino", weights="fp32")
        export_openvino(gguf, tmp / "openvino-stateless", weights="fp32", stateless=True)
        export_openvino(
            gguf, tmp / "npu", device_profile="npu", max_prompt=WINDOW, max_context=CAPACITY, compress=compress_npu
        )
        export_onnx(gguf, tmp / "ort")
        export_onnx(gguf, tmp / "portable", graph="portable")
        export_onnx(gguf, tmp / "static", graph="static", max_prompt=WINDOW, max_context=CAPACITY)
    return model, tmp


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
