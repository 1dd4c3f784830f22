"""qwen_edge.runtime.Engine on every folder kind the exporter writes: the same greedy tokens as our
torch model, chat prefix reuse, streaming, cancellation, concurrency, capacity errors."""

import os
import threading

import numpy as np
import pytest

from qwen_edge.models.reference import TorchStep
from qwen_edge.runtime import Engine, EngineError
from qwen_edge.runtime.generate import Sampling, generate

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
PROMPT = [5, 17, 300, 2, 99, 41, 7, 8, 9, 10, 11]
WINDOW, CAPACITY = 8, 64


@pytest.fixture(scope="module")
def folders(export_kinds):
    return export_kinds


def load(folder):
    """Every OpenVINO folder at f32 (compute and KV cache), whatever its name: comparisons must
    not mix precisions."""
    from qwen_edge.runtime.manifest import read

    return Engine.load(folder, config=EXACT if read(folder).format == "openvino" else None)


def torch_greedy(model, prompt, n):
    return list(generate(TorchStep(model), prompt, Sampling(max_new_tokens=n, ignore_eos=True)))


@pytest.mark.parametrize("kind", ["openvino", "openvino-stateless", "ort", "portable", "static"])
def test_greedy_tokens_equal_torch(folders, kind):
    model, tmp = folders
    engine = load(tmp / kind)
    result = engine.generate(PROMPT, max_new_tokens=20, ignore_eos=True)
    assert result.token_ids == torch_greedy(model, PROMPT, 20)
    assert result.stats.prompt_tokens == len(PROMPT) and result.stats.new_tokens == 20
    assert result.stopped_by == "length" and result.text == engine.tokenizer.decode(result.token_ids)


def test_npu_pair_runs_through_windows_like_the_int4_dynamic_ir(folders, tmp_path, monkeypatch):
    """The NPU folder (INT4, static windows) against the same INT4 weights in the dynamic IR, both
    at f32. The NPU export compresses fp16 weights, so the reference does too (INT4 made from the
    fp32 IR differs in the last bit of some scales, enough to flip near-tied greedy tokens)."""
    import openvino as ov

    from qwen_edge.export import bundle
    from qwen_edge.export.to_openvino import export_openvino
    from qwen_edge.quantize.recipes import compress_openvino, preset

    _, tmp = folders
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))
    export_openvino(str(tmp / "m.gguf"), tmp_path / "fp16", weights="fp16")
    model = ov.Core().read_model(str(tmp_path / "fp16" / "openvino_model.xml"))
    model, _ = compress_openvino(model, preset("int4-npu"))
    out = tmp_path / "dyn"
    with bundle.staged(out) as staged:
        ov.save_model(model, str(staged / "openvino_model.xml"), compress_to_fp16=False)
        for f in (tmp / "openvino").iterdir():
            if not f.name.startswith("openvino_model.") and f.name != "manifest.json":
                (staged / f.name).write_bytes(f.read_bytes())
        bundle.seal(staged, {"format": "openvino", "graph": "stateful", "config": {}})
    for prompt in (PROMPT[:5], PROMPT + PROMPT):  # one padded window; three windows
        want = load(out).generate(prompt, max_new_tokens=12, ignore_eos=True).token_ids
        got = Engine.load(tmp / "npu", config=EXACT).generate(prompt, max_new_tokens=12, ignore_eos=True)
        assert got.token_ids == want


@pytest.mark.parametrize("kind", ["openvino", "openvino-stateless", "ort", "portable"])
def test_chat_reuses_the_cache_and_equals_a_fresh_run(folders, kind):
    _, tmp = folders
    engine = load(tmp / kind)
    chat = engine.chat(system="be brief")
    fed = []
    append = chat.session.cache.append
    chat.session.cache.append = lambda ids, **kw: fed.append(len(ids)) or append(ids, **kw)
    chat.ask("hello there", max_new_tokens=6, ignore_eos=True)
    first_prompt = len(chat.last.prompt_token_ids)
    fed.clear()
    second = chat.ask("and then?", max_new_tokens=6, ignore_eos=True)
    # the first turn's prompt is not fed again: only the reply (as re-tokenized) and the new turn
    assert fed[0] <= len(second.prompt_token_ids) - first_prompt
    fresh = load(tmp / kind).generate(second.prompt_token_ids, max_new_tokens=6, ignore_eos=True)
    assert second.token_ids == fresh.token_ids
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_a_full_static_context_errors_or_trims_the_oldest_turn(folders):
    _, tmp = folders
    engine = load(tmp / "static")
    chat = engine.chat(system="be brief")
    chat.ask("hello there", max_new_tokens=6, ignore_eos=True)
    with pytest.raises(EngineError, match=f"this model holds {CAPACITY}: start a new chat"):
        chat.ask("and then?", max_new_tokens=6, ignore_eos=True)
    assert len(chat.messages) == 3  # the refused turn left the conversation as it was
    chat.overflow = "trim"
    reply = chat.ask("and then?", max_new_tokens=6, ignore_eos=True)
    assert [m["content"] for m in chat.messages[:2]] == ["be brief", "and then?"]
    expected = engine.tokenizer.apply_chat_template(chat.messages[:2])
    assert reply.prompt_token_ids == engine.tokenizer.encode(expected)
    with pytest.raises(EngineError, match=f"this message needs .* holds {CAPACITY}: shorten it"):
        chat.ask("one more", max_new_tokens=CAPACITY)  # nothing to trim could make it fit


def test_a_new_prompt_after_a_diverging_one_truncates_the_cache(folders):
    _, tmp = folders
    for kind in ("openvino", "openvino-stateless", "ort", "portable"):
        session = load(tmp / kind).session()
        session.generate(PROMPT + [1, 2, 3], max_new_tokens=4, ignore_eos=True)
        again = session.generate(PROMPT + [4, 5], max_new_tokens=8, ignore_eos=True)
        assert (
            again.token_ids == load(tmp / kind).generate(PROMPT + [4, 5], max_new_tokens=8, ignore_eos=True).token_ids
        )


def test_the_ort_kv_buffer_grows_and_keeps_what_it_holds(folders):
    from qwen_edge.runtime.onnx_backend import SharedBufferCache

    model, tmp = folders
    engine = load(tmp / "ort")
    engine.model.new_cache = lambda: SharedBufferCache(engine.model, initial=4)
    assert engine.generate(PROMPT, max_new_tokens=20, ignore_eos=True).token_ids == torch_greedy(model, PROMPT, 20)


def test_static_prompt_over_capacity_fails_before_any_compute(folders):
    _, tmp = folders
    session = load(tmp / "static").session()
    calls = []
    session.cache.append = lambda ids, **kw: calls.append(ids)
    with pytest.raises(EngineError, match=f"holds {CAPACITY}: shorten it"):
        session.generate(list(range(CAPACITY + 1)), max_new_tokens=4)
    assert calls == []
    near = load(tmp / "static").generate(list(range(1, CAPACITY - 2)), max_new_tokens=10, ignore_eos=True)
    assert near.stopped_by == "context" and len(near.token_ids) == 4  # generation stops at the last slot


def test_seeded_sampling_is_reproducible(folders):
    _, tmp = folders
    engine = load(tmp / "ort")
    options = dict(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7, ignore_eos=True)
    a, b = engine.generate(PROMPT, **options), engine.generate(PROMPT, **options)
    c = engine.generate(PROMPT, **{**options, "seed": 8})
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_cancel_from_another_thread_stops_the_stream(folders):
    _, tmp = folders
    session = load(tmp / "ort").session()
    result_holder = {}

    def run():
        from qwen_edge.runtime import Result

        result = Result("", [], [])
        for i, _ in enumerate(session.stream(PROMPT, result=result, max_new_tokens=500, ignore_eos=True)):
            if i == 3:
                threading.Thread(target=session.cancel).start()
                threading.Event().wait(0.2)
        result_holder["r"] = result

    run()
    result = result_holder["r"]
    assert result.stopped_by == "cancelled" and 4 <= len(result.token_ids) < 500


def test_sessions_in_threads_are_independent_and_a_shared_session_is_refused(folders):
    model, tmp = folders
    engine = load(tmp / "openvino")
    prompts = [PROMPT, PROMPT[::-1], PROMPT[2:], PROMPT[:4]]
    want = [torch_greedy(model, p, 12) for p in prompts]
    got = [None] * len(prompts)

    def work(i):
        got[i] = engine.session().generate(prompts[i], max_new_tokens=12, ignore_eos=True).token_ids

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    session = engine.session()
    stream = session.stream(PROMPT, max_new_tokens=50, ignore_eos=True)
    next(stream)
    with pytest.raises(RuntimeError, match="give each thread its own session"):
        session.generate(PROMPT, max_new_tokens=2)


def test_load_refuses_altered_folders_and_wrong_backends(folders, tmp_path):
    import shutil

    _, tmp = folders
    copy = tmp_path / "ort"
    shutil.copytree(tmp / "ort", copy)
    with pytest.raises(EngineError, match="runs on --backend onnxruntime, not openvino"):
        Engine.load(copy, backend="openvino")
    with pytest.raises(EngineError, match="not present on this machine"):
        Engine.load(tmp / "openvino", device="NPU")
    with open(copy / "model.onnx.data", "r+b") as f:
        f.seek(100)
        f.write(b"\x01\x02")
    with pytest.raises(EngineError, match="altered since export"):
        Engine.load(copy)
    with pytest.raises(EngineError, match="no manifest.json"):
        Engine.load(tmp_path)


def test_a_verified_folder_is_hashed_once_until_a_file_changes(folders, tmp_path, monkeypatch):
    import shutil

    from qwen_edge.runtime import manifest

    _, tmp = folders
    copy = tmp_path / "ort"
    shutil.copytree(tmp / "ort", copy)
    hashed = []
    real = manifest.sha256_file
    monkeypatch.setattr(manifest, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    manifest.verify(copy)
    assert "model.onnx.data" in hashed
    hashed.clear()
    manifest.verify(copy)
    assert hashed == ["manifest.json"]  # sizes and mtimes only, and the manifest itself
    manifest.verify(copy, full=True)
    assert "model.onnx.data" in hashed
    data = copy / "model.onnx.data"
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1))
    hashed.clear()
    manifest.verify(copy)
    assert "model.onnx.data" in hashed


def test_stream_pieces_join_into_the_text(folders):
    _, tmp = folders
    session = load(tmp / "portable").session()
    pieces = list(session.stream(PROMPT, max_new_tokens=24, ignore_eos=True))
    full = load(tmp / "portable").generate(PROMPT, max_new_tokens=24, ignore_eos=True)
    assert "".join(pieces) == full.text
    assert all("\ufffd" not in p for p in pieces[:-1])
    assert np.all([isinstance(p, str) and p for p in pieces])


def test_cli_generate_json_and_stream(folders):
    import json

    from .test_cli import qwen_edge

    model, tmp = folders
    prompt = "hello world"
    out = qwen_edge("generate", str(tmp / "ort"), "-p", prompt, "--max-new-tokens", "8", "--ignore-eos", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert set(got) >= {"text", "prompt_token_ids", "token_ids", "stats"}
    assert set(got["stats"]) == {"prompt_tokens", "new_tokens", "load_s", "ttft_s", "decode_tokens_per_s", "total_s"}
    assert got["token_ids"] == torch_greedy(model, got["prompt_token_ids"], 8)
    streamed = qwen_edge("generate", str(tmp / "ort"), "-p", prompt, "--max-new-tokens", "8", "--ignore-eos")
    assert streamed.returncode == 0 and streamed.stdout == got["text"] + "\n"
    assert "prompt tokens" in streamed.stderr and "tok/s" in streamed.stderr
    bad = qwen_edge("generate", str(tmp / "ort"), "-p", prompt, "--top-p", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("qwen-edge generate: error: top_p must be in")


def test_cli_chat_over_piped_stdin_answers_each_line(folders):
    import subprocess
    import sys

    _, tmp = folders
    lines = "hi\n/reset\nhow are you\n"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen_edge.cli.main",
            "chat",
            str(tmp / "openvino"),
            "--max-new-tokens",
            "4",
            "--ignore-eos",
            "--stats",
        ],
        input=lines,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("prompt tokens") == 2  # two turns answered; /reset is a command
    engine = Engine.load(tmp / "openvino")
    chat = engine.chat()
    first = chat.ask("hi", max_new_tokens=4, ignore_eos=True).text
    chat.reset()
    second = chat.ask("how are you", max_new_tokens=4, ignore_eos=True).text
    assert out.stdout == f"{first}\n{second}\n"


def test_openvino_model_cache_by_default_and_warm_up(folders, tmp_path, monkeypatch):
    """A compiled blob lands in the user cache unless told not to; warm-up changes no token."""
    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path / "cache"))
    _, tmp = folders
    blobs = tmp_path / "cache" / "openvino"
    cold = Engine.load(tmp / "openvino", config=EXACT, cache_dir=False)
    assert not blobs.exists() or not any(blobs.rglob("*.blob"))
    want = cold.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids
    warm = Engine.load(tmp / "openvino", config=EXACT, warm_up=True)
    assert [p.suffix for p in blobs.rglob("*.*")] == [".blob"]
    assert warm.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids == want
    ort = Engine.load(tmp / "ort", warm_up=True)  # ONNX Runtime folders warm up too, and cache nothing
    assert ort.generate(PROMPT, max_new_tokens=4, ignore_eos=True).token_ids == torch_greedy(folders[0], PROMPT, 4)
    assert len(list(blobs.rglob("*.blob"))) == 1


def test_openvino_cache_is_kept_to_its_budget(tmp_path, monkeypatch):
    from qwen_edge.runtime import user_cache

    monkeypatch.setenv("QWEN_EDGE_CACHE", str(tmp_path))
    folder = tmp_path / "openvino"
    folder.mkdir()
    for age, name in enumerate(["new", "mid", "old"]):
        (folder / f"{name}.blob").write_bytes(b"x" * 100)
        os.utime(folder / f"{name}.blob", (1e9 - age * 1000, 1e9 - age * 1000))
    assert user_cache.openvino_cache(budget=250) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["mid.blob", "new.blob"]


def test_stop_strings_end_to_end_in_the_api_and_the_cli(folders):
    """A stop string taken from the greedy text ends the text just before it, says so, and the
    CLI's --stop does the same."""
    import json
    import subprocess
    import sys

    _, tmp = folders
    engine = load(tmp / "ort")
    full = engine.generate("the hen", max_new_tokens=24, ignore_eos=True)
    stop = full.text[len(full.text) // 2 :][:2]
    assert stop.strip() and full.text.index(stop) > 0
    cut = engine.generate("the hen", max_new_tokens=24, ignore_eos=True, stop=[stop])
    assert cut.stopped_by == "stop" and cut.text == full.text[: full.text.index(stop)]
    args = [sys.executable, "-m", "qwen_edge.cli.main", "generate", str(tmp / "ort"), "-p", "the hen"]
    args += ["--max-new-tokens", "24", "--ignore-eos", "--json", "--stop", stop]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["stopped_by"] == "stop" and printed["text"] == cut.text


def test_generate_chat_with_a_system_message_on_the_cli(folders):
    import json
    import subprocess
    import sys

    _, tmp = folders
    args = [sys.executable, "-m", "qwen_edge.cli.main", "generate", str(tmp / "ort"), "-p", "hi", "--chat"]
    out = subprocess.run([*args, "--system", "be brief", "--max-new-tokens", "3", "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    tok = load(tmp / "ort").tokenizer
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert json.loads(out.stdout)["prompt_token_ids"] == tok.encode(tok.apply_chat_template(messages))


@pytest.mark.parametrize("kind", ["static", "npu"])
def test_static_chat_reuse_equals_a_fresh_run_even_when_the_window_moves_back(folders, kind):
    """A second prompt that extends the first reuses the cached slots; near the end of the KV
    slots the last window moves back over written ones (static_window.plan): same tokens as a
    fresh session either way."""
    from qwen_edge.runtime.static_window import plan

    _, tmp = folders
    session = load(tmp / kind).session()
    calls = []
    cache = session.cache
    append = cache.append
    cache.append = lambda ids, **kw: calls.append((cache.length, len(ids))) or append(ids, **kw)
    first = PROMPT * 4 + PROMPT[:8]  # 52 tokens
    reply = session.generate(first, max_new_tokens=6, ignore_eos=True).token_ids
    calls.clear()
    second = first + reply + [7, 8, 9]  # 61 tokens; the cache holds 57: 4 new ones from slot 57 > 64 - 8
    got = session.generate(second, max_new_tokens=2, ignore_eos=True).token_ids
    length, n = calls[0]
    assert length >= len(first) and n < len(second) - len(first) + 1  # only the new part was fed
    assert any(c.start < length for c in plan(length, n, WINDOW, CAPACITY))  # the window moved back
    assert got == load(tmp / kind).session().generate(second, max_new_tokens=2, ignore_eos=True).token_ids


def test_a_cached_blob_is_never_reused_under_other_compile_properties(folders, tmp_path):
    """OpenVINO's cache key leaves INFERENCE_PRECISION_HINT out: an f32 blob reused by a default
    load gave NaN logits. Each set of properties now has a cache folder of its own."""
    _, tmp = folders
    cache = tmp_path / "blobs"
    want = Engine.load(tmp / "openvino-stateless", cache_dir=False).step().prefill(PROMPT)
    Engine.load(tmp / "openvino-stateless", config=EXACT, cache_dir=cache).step().prefill(PROMPT)
    got = Engine.load(tmp / "openvino-stateless", cache_dir=cache).step().prefill(PROMPT)
    assert not np.isnan(got).any() and np.array_equal(got, want)
    assert len([p for p in cache.rglob("*.blob")]) == 2


def test_a_prompt_is_checked_without_recounting_the_vocabulary(folders):
    """tokenizers rebuilds its vocabulary to count it (60 ms at Qwen's 151 k tokens): the prompt-id
    check once asked per token, 15 s of a 256-token prompt's 16.6 s on the real 0.5B."""
    _, tmp = folders
    engine = load(tmp / "ort")

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get_vocab_size(self, **kwargs):
            self.calls += 1
            return self.inner.get_vocab_size(**kwargs)

    counting = engine.tokenizer._tok = Counting(engine.tokenizer._tok)
    engine.generate(PROMPT * 5, max_new_tokens=3, ignore_eos=True)
    engine.chat().ask("the hen " * 10, max_new_tokens=3)
    assert counting.calls == 0
    with pytest.raises(EngineError, match="outside the vocabulary"):
        engine.generate([1, engine.tokenizer.vocab_size], max_new_tokens=1)
