"""The mobile demo's JavaScript (android_demo/), run with the machine's Node.js: its tokenizer gives
the Python tokenizer's ids on WikiText lines and mixed-script text."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "android_demo"
MIXED = [
    "Hello, world! It's 3.14159 — “quoted” text.",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "快速排序的基本思想是分治。日本語のテキストも。한국어 문장.",
    "Emoji 😀👍🏽🇫🇷 and accents: café, naïve, Ærø, ß, ﬁ (ligature), e\u0301 (combining).",
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "   leading spaces, tabs\tand\r\nwindows newlines   ",
    "I'LL SAY IT'S FINE, we've said they'd go.",
    "",
]


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.skip("Node.js is not installed on this machine")
    return path


def test_js_tokenizer_matches_python(shared_tokenizer, wikitext_lines, tmp_path):
    from qwen_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer(shared_tokenizer)
    texts = MIXED + wikitext_lines[:300]
    cases = [[t, tok.encode(t)] for t in texts]
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps({"tokenizer": str(shared_tokenizer / "tokenizer.json"), "cases": cases}))
    out = subprocess.run(
        [node(), "--test", "test/tokenizer.test.mjs"],
        cwd=DEMO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "QWEN_EDGE_TOKENIZER_CASES": str(spec)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "# pass 2" in out.stdout and "# skipped 0" in out.stdout
