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


def test_js_generation_rules_and_greedy_tokens_on_onnxruntime_web(tmp_path):
    """`export --target mobile` on a tiny model, then the JS loop on onnxruntime-web (WASM, under
    Node) against our Python runtime on that bundle: the same greedy tokens. Needs `npm ci` in
    android_demo (make install runs it)."""
    import os

    import onnx

    from qwen_edge.cli.main import main
    from qwen_edge.models.shapes import random_model
    from qwen_edge.runtime import Engine

    from .gguf_writer import write_gguf

    if not (DEMO / "node_modules" / "onnxruntime-web").exists():
        pytest.fail("android_demo/node_modules is missing: run make install (it runs npm ci there)")
    os.environ["QWEN_EDGE_CACHE"] = str(tmp_path / "cache")
    model = random_model("tiny-untied", seed=4, std=0.1)
    assert (
        main(
            ["export", str(write_gguf(model, tmp_path / "m.gguf")), "-o", str(tmp_path / "int4"), "--target", "mobile"]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "int4" / "manifest.json").read_text())
    assert (manifest["format"], manifest["graph"], manifest["precision"]) == ("onnx", "ort", "int4-mobile")
    assert manifest["recipe"]["mode"] == "int4_sym" and manifest["runtime_file"] == "model_last_logits.onnx"
    ops = {
        n.op_type for n in onnx.load(tmp_path / "int4" / "model_last_logits.onnx", load_external_data=False).graph.node
    }
    assert {"MatMulNBits", "GatherBlockQuantized", "GroupQueryAttention"} <= ops and "MatMul" not in ops
    prompt = "hello world, 快"
    expected = Engine.load(tmp_path / "int4").generate(prompt, max_new_tokens=12, ignore_eos=True).token_ids
    spec = tmp_path / "case.json"
    config = json.loads((tmp_path / "int4" / "config.json").read_text())
    spec.write_text(
        json.dumps({"folder": str(tmp_path / "int4"), "prompt": prompt, "expected": expected, "config": config})
    )
    out = subprocess.run(
        [node(), "--test", "test/generate.test.mjs"],
        cwd=DEMO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "QWEN_EDGE_GENERATE_CASE": str(spec)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "# pass 3" in out.stdout and "# skipped 0" in out.stdout
