import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_TOKENIZER = SHARED / "data" / "qwen2.5-tokenizer"
WIKITEXT = SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw"


@pytest.fixture
def shared_tokenizer() -> Path:
    if not (SHARED_TOKENIZER / "tokenizer.json").exists():
        pytest.skip("../shared/data/qwen2.5-tokenizer is not present on this machine")
    return SHARED_TOKENIZER


@pytest.fixture
def wikitext_lines() -> list[str]:
    if not WIKITEXT.exists():
        pytest.skip("../shared/data/wikitext-2-raw is not present on this machine")
    text = WIKITEXT.read_text(encoding="utf-8").replace("\r\n", "\n")
    return [ln for ln in text.split("\n") if ln.strip()]


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The real Qwen2.5-Coder-0.5B-Instruct GGUF, fetched once into the user cache."""
    from qwen_edge.models.fetch import fetch

    return fetch()


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
