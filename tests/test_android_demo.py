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


def node_test(script: str, passed: int, **env) -> None:
    """`node --test script` in android_demo with `env`: every test ran and passed."""
    out = subprocess.run(
        [node(), "--test", script], cwd=DEMO, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"# pass {passed}" in out.stdout and "# skipped 0" in out.stdout


def test_js_tokenizer_matches_python(shared_tokenizer, wikitext_lines, tmp_path):
    from qwen_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer(shared_tokenizer)
    texts = MIXED + wikitext_lines[:300]
    cases = [[t, tok.encode(t)] for t in texts]
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps({"tokenizer": str(shared_tokenizer / "tokenizer.json"), "cases": cases}))
    node_test("test/tokenizer.test.mjs", passed=2, QWEN_EDGE_TOKENIZER_CASES=str(spec))


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
    assert (manifest["format"], manifest["graph"], manifest["precision"]) == ("onnx", "ort", "int8-mobile")
    assert manifest["recipe"]["name"] == "int8-mobile" and manifest["runtime_file"] == "model_last_logits.onnx"
    nodes = onnx.load(tmp_path / "int4" / "model_last_logits.onnx", load_external_data=False).graph.node
    assert {"MatMulInteger", "GatherBlockQuantized", "GroupQueryAttention"} <= {n.op_type for n in nodes}
    float_matmuls = [n.name for n in nodes if n.op_type == "MatMul"]  # down_proj only, fp16-stored behind a Cast
    assert float_matmuls and all("down_proj" in name for name in float_matmuls), float_matmuls
    assert manifest["report"]["top1_agreement"] > 0.5
    # the ORT-format model for native ONNX Runtime Mobile: listed in the manifest, with its operator list,
    # and it computes what the ONNX graph computes (ONNX Runtime on this machine reads it too)
    assert manifest["ort_format"]["files"] == ["model_last_logits.ort", "required_operators.config"]
    assert "ort_mobile/model_last_logits.ort" in manifest["files"]
    assert "com.microsoft;1;" in (tmp_path / "int4" / "ort_mobile" / "required_operators.config").read_text()
    import numpy as np
    import onnxruntime as ort

    feeds = {"input_ids": np.array([[5, 17, 300]]), "attention_mask": np.ones((1, 3), np.int64)}
    runs = []
    for path in ("model_last_logits.onnx", "ort_mobile/model_last_logits.ort"):
        session = ort.InferenceSession(str(tmp_path / "int4" / path), providers=["CPUExecutionProvider"])
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in session.get_inputs()[2:]}
        runs.append(session.run(["logits"], {**feeds, **past})[0])
    assert np.abs(runs[0] - runs[1]).max() < 1e-4
    prompt = "hello world, 快"
    expected = Engine.load(tmp_path / "int4").generate(prompt, max_new_tokens=12, ignore_eos=True).token_ids
    spec = tmp_path / "case.json"
    config = json.loads((tmp_path / "int4" / "config.json").read_text())
    spec.write_text(
        json.dumps({"folder": str(tmp_path / "int4"), "prompt": prompt, "expected": expected, "config": config})
    )
    node_test("test/generate.test.mjs", passed=4, QWEN_EDGE_GENERATE_CASE=str(spec))


ARTIFACTS = Path(__file__).resolve().parents[1] / "android_demo" / "test-artifacts"


@pytest.fixture(scope="module")
def mobile_bundle(tmp_path_factory):
    import os

    from qwen_edge.cli.main import main
    from qwen_edge.models.shapes import random_model

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("mobile")
    os.environ["QWEN_EDGE_CACHE"] = str(tmp / "cache")
    gguf = write_gguf(random_model("tiny-untied", seed=4, std=0.1), tmp / "m.gguf")
    assert main(["export", str(gguf), "-o", str(tmp / "bundle"), "--target", "mobile"]) == 0
    return tmp / "bundle"


def serve(bundle):
    import threading

    from qwen_edge.cli.serve_demo import make_server

    server = make_server(bundle, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("/usr/bin/chromium is missing: make install installs Debian's chromium")
    return path


def test_the_app_on_a_phone_viewport_streams_and_stops(mobile_bundle):
    server, url = serve(mobile_bundle)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "chat-phone.png"
    try:
        out = subprocess.run(
            [node(), "test/e2e.mjs", url, str(shot)],
            cwd=DEMO, capture_output=True, text=True, timeout=600,
            env={"PATH": "/usr/bin:/bin", "CHROMIUM": chromium(), "HOME": str(mobile_bundle.parent)},
        )  # fmt: skip
    finally:
        server.shutdown()
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads(lines[-1])
    assert "error" not in result, result
    assert result["isolated"] is True and "ready" in result["status"]  # COOP / COEP: threads allowed
    seen = result["token_counts_seen"]
    assert len([n for n in seen if n > 0]) >= 2, seen  # the answer grew in steps: streamed
    assert result["state"] == "stopped" and 8 <= result["tokens"] < 256  # the stop button ended it early
    assert "tokens/s" in result["speed"] and not result["stop_visible"]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_serve_demo_refuses_what_the_app_cannot_load(tmp_path):
    from qwen_edge.cli.serve_demo import ServeError, make_server

    with pytest.raises(ServeError, match="no manifest.json"):
        make_server(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "openvino", "graph": "stateful"}))
    with pytest.raises(ServeError, match="--target mobile"):
        make_server(tmp_path)


def test_a_tampered_bundle_is_refused_in_the_browser(mobile_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(mobile_bundle, bad)
    data = bad / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    server, url = serve(bad)
    try:
        out = subprocess.run(
            [node(), "test/e2e.mjs", url, str(tmp_path / "bad.png")],
            cwd=DEMO, capture_output=True, text=True, timeout=600,
            env={"PATH": "/usr/bin:/bin", "CHROMIUM": chromium(), "HOME": str(tmp_path)},
        )  # fmt: skip
    finally:
        server.shutdown()
    result = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    assert "model.onnx.data failed verification" in result.get("error", ""), result


@pytest.mark.slow
def test_the_real_model_answers_in_the_browser(real_gguf, tmp_path):
    """The real 0.5B as a mobile bundle, in headless Chromium on a phone viewport (4x CPU
    throttling): the chat answers the capital question with Paris. Tokens/s is printed for
    benchmarks/RESULTS.md (a number, not a pass condition)."""
    from qwen_edge.cli.main import main

    bundle = tmp_path / "bundle"
    assert main(["export", str(real_gguf), "-o", str(bundle), "--target", "mobile"]) == 0
    server, url = serve(bundle)
    try:
        out = subprocess.run(
            [node(), "test/e2e.mjs", url, str(tmp_path / "real.png"), "What is the capital of France? One word.",
             "--until-done"],
            cwd=DEMO, capture_output=True, text=True, timeout=1500,
            env={"PATH": "/usr/bin:/bin", "CHROMIUM": chromium(), "HOME": str(tmp_path)},
        )  # fmt: skip
    finally:
        server.shutdown()
    result = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    print("browser:", json.dumps({k: result.get(k) for k in ("load_s", "status", "speed", "answer", "tokens")}))
    assert "error" not in result, result
    assert result["state"] == "done" and "Paris" in result["answer"], result


def test_the_mobile_bundle_runs_in_onnxruntime_genai_as_in_our_runtime(mobile_bundle):
    """Native apps load the same folder with onnxruntime-genai (MatMulInteger and all)."""
    from qwen_edge.runtime import Engine

    from .test_export_onnx import genai_greedy

    prompt = [5, 17, 30, 2, 99]
    ours = Engine.load(mobile_bundle).generate(prompt, max_new_tokens=8, ignore_eos=True).token_ids
    assert genai_greedy(mobile_bundle, prompt, 8) == ours
