"""Streaming text: whole characters only, stop strings never shown, and the pieces add up."""

import random

import pytest

from qwen_edge.runtime.streaming import TextStreamer
from qwen_edge.runtime.tokenizer import Tokenizer

from .cache_env import cache_at

ALPHABET = list("abc xyz,.\n") + list("快速排序的基本思想是") + ["😀", "👍🏽", "🇫🇷", "é", "ß", "€", "𝄞", "ñ"]


def stream(tok, ids, stop=()):
    s = TextStreamer(tok.decode, stop)
    pieces = [s.put(t) for t in ids]
    pieces.append(s.end())
    return [p for p in pieces if p], s


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory):
    """The tiny test GGUF's byte-level BPE (3 merges): every non-ASCII byte is its own token."""
    from qwen_edge.models.loaders import load
    from qwen_edge.models.shapes import random_model

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("tok")

    with cache_at(str(tmp / "cache")):
        return load(str(write_gguf(random_model("tiny"), tmp / "m.gguf"))).tokenizer_dir


@pytest.mark.parametrize("which", ["byte-level", "qwen2.5"])
def test_fuzzed_multibyte_text_streams_as_whole_characters(which, byte_tokenizer, request):
    folder = byte_tokenizer if which == "byte-level" else request.getfixturevalue("shared_tokenizer")
    tok, rng = Tokenizer(folder), random.Random(0)
    split = 0
    for _ in range(300):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30)))
        ids = tok.encode(text)
        split += sum("\ufffd" in tok.decode([t]) for t in ids)
        pieces, _ = stream(tok, ids)
        assert "".join(pieces) == tok.decode(ids) == text
        assert not any("\ufffd" in p for p in pieces), pieces
    assert split > 50  # the fuzz did split characters across tokens


def test_stop_strings_end_the_text_and_are_never_shown(shared_tokenizer):
    tok, rng = Tokenizer(shared_tokenizer), random.Random(1)
    for _ in range(200):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(5, 40)))
        stop = text[rng.randint(1, len(text) - 1) :][: rng.randint(1, 4)]
        pieces, s = stream(tok, tok.encode(text), stop=(stop, "never-there"))
        shown = "".join(pieces)
        assert shown == text[: text.find(stop)] and s.stopped
        # nothing of the stop string leaked in an earlier piece either
        assert all(stop not in "".join(pieces[: i + 1]) for i in range(len(pieces)))


def test_text_that_only_looks_like_a_stop_string_comes_out_at_the_end(shared_tokenizer):
    tok = Tokenizer(shared_tokenizer)
    pieces, s = stream(tok, tok.encode("the answer is END"), stop=("ENDING",))
    assert "".join(pieces) == "the answer is END" and not s.stopped


@pytest.mark.parametrize("text", ["", "a"])
def test_short_streams(shared_tokenizer, text):
    tok = Tokenizer(shared_tokenizer)
    pieces, _ = stream(tok, tok.encode(text))
    assert "".join(pieces) == text
