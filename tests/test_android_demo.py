"""The mobile demo's JavaScript (android_demo/), run with the machine's Node.js: its tokenizer gives
the Python tokenizer's ids on WikiText lines and mixed-script text."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .cache_env import cache_at

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
    """The app's tokenizer encodes as ours does, and its chat template (the same jinja through
    @huggingface/jinja) renders conversations exactly as our apply_chat_template."""
    from qwen_edge.runtime.tokenizer import Tokenizer

    tok = Tokenizer(shared_tokenizer)
    texts = MIXED + wikitext_lines[:300]
    cases = [[t, tok.encode(t)] for t in texts]
    chats = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Write fib in Python."}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "再"}],
    ]
    rendered = [[chat, tok.apply_chat_template(chat)] for chat in chats]
    spec = tmp_path / "cases.json"
    template = {"template": tok.chat_template, "eos_token": tok.eos_token, "chats": rendered}
    spec.write_text(json.dumps({"tokenizer": str(shared_tokenizer / "tokenizer.json"), "cases": cases, **template}))
    node_test("test/tokenizer.test.mjs", passed=3, QWEN_EDGE_TOKENIZER_CASES=str(spec))


def test_js_generation_rules_and_greedy_tokens_on_onnxruntime_web(tmp_path):
    """`export --target mobile` on a tiny model, then the JS loop on onnxruntime-web (WASM, under
    Node) against our Python runtime on that bundle: the same greedy tokens. Needs `npm ci` in
    android_demo (make install runs it)."""

    import onnx

    from qwen_edge.cli.main import main
    from qwen_edge.models.shapes import random_model
    from qwen_edge.runtime import Engine

    from .gguf_writer import write_gguf

    if not (DEMO / "node_modules" / "onnxruntime-web").exists():
        pytest.fail("android_demo/node_modules is missing: run make install (it runs npm ci there)")
    with cache_at(str(tmp_path / "cache")):
        model = random_model("tiny-untied", seed=4, std=0.1)
        assert (
            main(
                [
                    "export",
                    str(write_gguf(model, tmp_path / "m.gguf")),
                    "-o",
                    str(tmp_path / "int4"),
                    "--target",
                    "mobile",
                ]
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
        feeds["num_logits"] = np.array([2])  # the last two positions' logits
        runs = []
        for path in ("model_last_logits.onnx", "ort_mobile/model_last_logits.ort"):
            session = ort.InferenceSession(str(tmp_path / "int4" / path), providers=["CPUExecutionProvider"])
            pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
            past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in pasts}
            runs.append(session.run(["logits"], {**feeds, **past})[0])
        assert runs[0].shape[1] == 2 and np.abs(runs[0] - runs[1]).max() < 1e-4
        prompt = "hello world, 快"
        expected = Engine.load(tmp_path / "int4").generate(prompt, max_new_tokens=12, ignore_eos=True).token_ids
        spec = tmp_path / "case.json"
        config = json.loads((tmp_path / "int4" / "config.json").read_text())
        case = {"folder": str(tmp_path / "int4"), "prompt": prompt, "expected": expected, "config": config}
        spec.write_text(json.dumps({**case, "sampling": sampling_cases()}))
        node_test("test/generate.test.mjs", passed=6, QWEN_EDGE_GENERATE_CASE=str(spec))


def sampling_cases() -> list[dict]:
    """Logits, settings and the Python runtime's distribution after penalties, temperature, top-k,
    min-p and top-p: what the JS `probabilities` must reproduce."""
    import numpy as np

    from qwen_edge.runtime.generate import Sampling, penalize, probabilities

    rng = np.random.default_rng(11)
    logits = (rng.standard_normal(3000) * 3).astype(np.float32)
    logits[[10, 20, 30]] = logits.max()  # ties at the top
    seen, output = [10, 5, 5, 77, 2999], [77, 400]
    cases = []
    for kw in (
        {"temperature": 0.7},
        {"temperature": 1.0, "top_k": 20},
        {"temperature": 0.8, "top_p": 0.9},
        {"temperature": 1.0, "min_p": 0.05},
        {"temperature": 1.0, "top_k": 2},  # three tied at the top: all kept
        {
            "temperature": 0.9,
            "top_k": 50,
            "top_p": 0.8,
            "min_p": 0.02,
            "repetition_penalty": 1.3,
            "presence_penalty": 0.5,
        },
    ):
        s = Sampling(**kw)
        z = penalize(logits, s, np.array(seen), np.array(output))
        names = {"top_k": "topK", "top_p": "topP", "min_p": "minP", "repetition_penalty": "repetitionPenalty",
                 "presence_penalty": "presencePenalty"}  # fmt: skip
        opts = {names.get(k, k): v for k, v in kw.items()}
        cases.append({"logits": logits.tolist(), "opts": opts, "seen": seen, "output": output,
                      "expected": probabilities(z, s).tolist()})  # fmt: skip
    return cases


ARTIFACTS = Path(__file__).resolve().parents[1] / "android_demo" / "test-artifacts"


@pytest.fixture(scope="module")
def mobile_bundle(tmp_path_factory):

    from qwen_edge.cli.main import main
    from qwen_edge.models.shapes import random_model

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("mobile")
    with cache_at(str(tmp / "cache")):
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


def e2e(bundle, shot, *args, timeout=600, query="") -> dict:
    """test/e2e.mjs against `bundle` served on loopback (the app's URL + `query`); its JSON result."""
    server, url = serve(bundle)
    url += query
    try:
        out = subprocess.run(
            [node(), "test/e2e.mjs", url, str(shot), *args],
            cwd=DEMO, capture_output=True, text=True, timeout=timeout,
            env={"PATH": "/usr/bin:/bin", "CHROMIUM": chromium(), "HOME": str(Path(shot).parent)},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    return json.loads(lines[-1])


def test_the_app_on_a_phone_viewport_streams_and_stops(mobile_bundle):
    """Typed and stopped as a user would (4x CPU throttling). What is asserted comes from the app's
    own log (the token count at each paint), not from when the driver happened to look."""
    ARTIFACTS.mkdir(exist_ok=True)
    result = e2e(
        mobile_bundle, ARTIFACTS / "chat-phone.png", "--prompt", "Hello, who are you?",
        "--stop-after", "8", "--temperature", "0", "--max-tokens", "2048",
    )  # fmt: skip
    assert "error" not in result and "console" not in result, result
    assert result["isolated"] is True and "ready" in result["status"]  # COOP / COEP: threads allowed
    assert result["device"] == "wasm" and "WebAssembly, 2 threads; no WebGPU in this browser" in result["status"]
    assert "int8-mobile" in result["model"] and "\u00a0MB" in result["model"]
    (turn,) = result["turns"]
    reply = turn["reply"]
    assert turn["state"] == "stopped" and reply["stopped"] and 8 <= reply["tokens"] < 2048, turn  # Stop ended it
    paints = reply["paints"]
    assert len(paints) >= 2 and 1 <= paints[0] < paints[-1] == reply["tokens"], paints  # text grew: streamed
    assert paints == sorted(paints)
    assert "tokens/s" in result["speed"] and not result["stop_visible"] and result["bubbles"] == 2
    png = (ARTIFACTS / "chat-phone.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_second_turn_reuses_the_first_and_new_chat_clears(mobile_bundle, tmp_path):
    """Turn 2's prompt holds turn 1 whole: the app computes only the new part (the KV cache stays in
    its worker between turns); New chat empties the screen and the cache."""
    result = e2e(
        mobile_bundle, tmp_path / "two.png", "--prompt", "Hello, who are you?", "--prompt", "And then?",
        "--prompt", "Once more.", "--temperature", "0", "--max-tokens", "24", "--new-chat",
    )  # fmt: skip
    assert "error" not in result and "console" not in result, result
    first, second, third = (t["reply"] for t in result["turns"])
    assert all(t["state"] == "done" for t in result["turns"]), result["turns"]
    assert first["reused"] == 0 and second["reused"] >= first["computed"], (first, second)
    assert third["reused"] >= second["reused"] + second["computed"], (second, third)
    assert result["bubbles"] == 6 and result["after_new_chat"] == {"bubbles": 0, "speed": ""}


def teacher_forced_logits(folder, ids: list[int]):
    """Every position's logits for `ids` in one ONNX Runtime CPU run of folder's model.onnx."""
    import numpy as np
    import onnxruntime as ort

    config = json.loads((folder / "config.json").read_text())
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    shape = (1, config["num_key_value_heads"], 0, config["hidden_size"] // config["num_attention_heads"])
    feeds = {i.name: np.zeros(shape, np.float32) for i in session.get_inputs() if i.name.startswith("past_")}
    feeds |= {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    return session.run(["logits"], feeds)[0][0]


def test_webgpu_runs_the_int4_model_and_agrees_with_our_runtime(mobile_bundle, tmp_path):
    """?ep=webgpu with Chromium's WebGPU on: here the only adapter is SwiftShader (a CPU fallback; no
    GPU on this machine), which the app takes only when asked. The bundle's webgpu/ INT4 model runs on
    onnxruntime-web's WebGPU build, its prompt fed 16 tokens a run, the cache kept on the GPU between
    turns; each greedy token is our runtime's argmax on the same folder (CPU, up to a 0.1 logit
    near-tie: MatMulNBits computes differently on the two)."""
    result = e2e(
        mobile_bundle, tmp_path / "gpu.png", "--prompt", "Hello, who are you?", "--prompt", "And then?",
        "--temperature", "0", "--max-tokens", "10", "--webgpu", query="?ep=webgpu",
    )  # fmt: skip
    assert "error" not in result and "console" not in result, result
    assert result["device"] == "webgpu" and "WebGPU: google swiftshader" in result["status"], result["status"]
    assert " int4 " in result["model"], result["model"]
    first, second = (t["reply"] for t in result["turns"])
    assert len(first["prompt_ids"]) > 16 and second["reused"] >= first["computed"], (first, second)
    for reply in (first, second):
        prompt, ids = reply["prompt_ids"], reply["ids"]
        assert 1 <= len(ids) <= 10
        logits = teacher_forced_logits(mobile_bundle / "webgpu", prompt + ids)
        for i, token in enumerate(ids):
            row = logits[len(prompt) - 1 + i]
            assert row[token] >= row.max() - 0.1, (i, token, int(row.argmax()), float(row.max() - row[token]))


def test_a_cpu_fallback_adapter_is_not_used_unasked(mobile_bundle, tmp_path):
    """SwiftShader's WebGPU is slower than WebAssembly: without ?ep=webgpu the app stays on WASM and says why."""
    result = e2e(mobile_bundle, tmp_path / "fb.png", "--max-tokens", "2", "--webgpu")
    assert "error" not in result, result
    assert result["device"] == "wasm" and "WebGPU here is a CPU fallback (google swiftshader)" in result["status"]
    assert "int8-mobile" in result["model"]


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
    result = e2e(bad, tmp_path / "bad.png")
    assert "model.onnx.data failed verification" in result.get("error", ""), result


@pytest.mark.slow
def test_the_real_model_answers_in_the_browser(real_gguf, tmp_path):
    """The real 0.5B as a mobile bundle, in headless Chromium on a phone viewport (4x CPU
    throttling): the chat answers the capital question with Paris. Tokens/s is printed for
    benchmarks/RESULTS.md (a number, not a pass condition)."""
    from qwen_edge.cli.main import main

    bundle = tmp_path / "bundle"
    assert main(["export", str(real_gguf), "-o", str(bundle), "--target", "mobile"]) == 0
    result = e2e(
        bundle, tmp_path / "real.png", "--prompt", "What is the capital of France? One word.",
        "--prompt", "And of Italy?", "--temperature", "0", timeout=1500,
    )  # fmt: skip
    print("browser:", json.dumps({k: result.get(k) for k in ("load_s", "status", "speed", "turns")}))
    assert "error" not in result, result
    first, second = result["turns"]
    assert first["state"] == second["state"] == "done" and "Paris" in first["answer"], result
    assert "Rome" in second["answer"], result
    assert second["reply"]["reused"] >= first["reply"]["computed"], result  # turn 1 came from the cache


def test_the_mobile_bundle_runs_in_onnxruntime_genai_as_in_our_runtime(mobile_bundle):
    """Native apps load the same folder with onnxruntime-genai (MatMulInteger and all)."""
    from qwen_edge.runtime import Engine

    from .test_export_onnx import genai_greedy

    prompt = [5, 17, 30, 2, 99]
    ours = Engine.load(mobile_bundle).generate(prompt, max_new_tokens=8, ignore_eos=True).token_ids
    assert genai_greedy(mobile_bundle, prompt, 8) == ours
