"""`qwen-edge serve` through the official openai client, against servers started here on 127.0.0.1
(each stopped at the end): answers equal our runtime's, streaming, stop strings, usage, seeds, auth,
OpenAI's error shapes, a full queue, a client that goes away, SIGTERM, and a bounded load test
whose every answer equals the same request alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai", reason="the dev extra installs openai")

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random model with a tokenizer, exported as an ONNX `ort` folder (fp32: batched and
    single runs compute the same numbers, so greedy answers must match exactly)."""
    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.shapes import random_model

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN_EDGE_CACHE", str(tmp / "cache"))
        gguf = write_gguf(random_model("tiny-untied", seed=4, std=0.1), tmp / "m.gguf")
        export_onnx(str(gguf), tmp / "tiny-ort")
    return tmp / "tiny-ort"


@contextlib.contextmanager
def running(folder, **options):
    """The app on a free loopback port in a thread; stopped (and joined) on exit."""
    import uvicorn

    from qwen_edge.cli.serve import make_app

    app, model_id = make_app(str(folder), **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield url, model_id
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def served(folder):
    with running(folder, api_key=KEY, parallel=8, max_queue=16) as (url, model_id):
        yield url, model_id


def client(url, key=KEY, **kw):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120, **kw)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def metric(url: str, name: str) -> float:
    for line in get(f"{url}/metrics").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def engine(folder):
    from qwen_edge.runtime import Engine

    return Engine.load(folder)


def solo_chat(engine, text: str, n: int, **options):
    ids = engine.tokenizer.encode(engine.tokenizer.apply_chat_template([{"role": "user", "content": text}]))
    return ids, engine.generate(ids, max_new_tokens=n, **options)


FINISH = {"length": "length", "eos": "stop", "stop": "stop"}


def test_models_health_metrics(served):
    url, model_id = served
    assert [m.id for m in client(url).models.list().data] == [model_id]
    assert json.loads(get(f"{url}/health"))["status"] == "ok"
    assert "qwen_edge_time_to_first_token_seconds_bucket" in get(f"{url}/metrics")


def test_chat_equals_the_runtime_with_usage(served, engine):
    url, model_id = served
    ids, want = solo_chat(engine, "Hello there", 12)
    got = client(url).chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Hello there"}], max_tokens=12, temperature=0
    )
    assert got.choices[0].message.content == want.text and got.choices[0].message.role == "assistant"
    assert got.choices[0].finish_reason == FINISH[want.stopped_by]
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (len(ids), len(want.token_ids))
    assert got.usage.total_tokens == len(ids) + len(want.token_ids) and got.object == "chat.completion"


def test_streaming_chat_and_completions(served, engine):
    url, model_id = served
    _, want = solo_chat(engine, "Stream this", 16)
    stream = client(url).chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "Stream this"}], max_tokens=16, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want.text and len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(want.token_ids)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == FINISH[want.stopped_by]

    plain = engine.generate("def fib(n):", max_new_tokens=10)
    got = client(url).completions.create(model=model_id, prompt="def fib(n):", max_tokens=10, temperature=0)
    assert got.choices[0].text == plain.text and got.object == "text_completion"
    pieces = client(url).completions.create(
        model=model_id, prompt="def fib(n):", max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in pieces) == plain.text


def test_stop_strings_end_the_answer_as_the_runtime_does(served, engine):
    url, model_id = served
    full = engine.generate("Count:", max_new_tokens=24).text
    stop = full[6:9]
    assert stop and stop in full
    want = engine.generate("Count:", max_new_tokens=24, stop=[stop])
    got = client(url).completions.create(model=model_id, prompt="Count:", max_tokens=24, temperature=0, stop=[stop])
    assert got.choices[0].text == want.text == full[: full.index(stop)]
    assert got.choices[0].finish_reason == "stop"


def test_a_seed_repeats_a_sampled_answer(served):
    url, model_id = served
    c = client(url)

    def ask(seed):
        return c.completions.create(model=model_id, prompt="Once", max_tokens=16, temperature=1.0, seed=seed)

    first = ask(7).choices[0].text
    assert ask(7).choices[0].text == first
    assert any(ask(s).choices[0].text != first for s in (8, 9, 10))


def test_vllm_style_extensions(served, engine):
    url, model_id = served
    want = engine.generate("Go", max_new_tokens=30, ignore_eos=True, temperature=0.8, top_k=5, seed=3)
    got = client(url).completions.create(model=model_id, prompt="Go", max_tokens=30, temperature=0.8, seed=3,
                                         extra_body={"ignore_eos": True, "top_k": 5})  # fmt: skip
    assert got.choices[0].text == want.text and got.usage.completion_tokens == 30
    with pytest.raises(openai.BadRequestError) as e:
        client(url).completions.create(model=model_id, prompt="Go", extra_body={"top_k": -5})
    assert e.value.body["param"] == "top_k"


def test_auth_and_errors_in_openai_shape(served):
    url, model_id = served
    msgs = [{"role": "user", "content": "hi"}]
    for key in ("wrong", ""):
        with pytest.raises(openai.AuthenticationError) as e:
            client(url, key=key or "none").chat.completions.create(model=model_id, messages=msgs)
        assert e.value.status_code == 401
    c = client(url)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=msgs)
    assert e.value.code == "model_not_found"
    bad = [
        ({"temperature": 5}, "temperature"),
        ({"n": 2}, "n"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"max_tokens": 10**6}, "messages"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"extra_body": {"mystery": 1}}, "mystery"),
    ]
    for options, param in bad:
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=model_id, messages=msgs, **options)
        assert e.value.status_code == 400 and e.value.body["param"] == param, (options, e.value.body)
        assert e.value.body["type"] == "invalid_request_error" and e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=model_id, messages=[{"role": "tool", "content": "x"}])
    assert "role" in e.value.body["param"]


def test_a_full_queue_answers_429_and_a_disconnect_cancels(folder):
    with running(folder, parallel=1, max_queue=1) as (url, model_id):
        c = client(url, key="-")
        long = {"model": model_id, "prompt": "Go", "max_tokens": 3000, "temperature": 0}
        stream = c.completions.create(**long, stream=True)
        next(iter(stream))  # it is running: the one row is taken
        queued = ThreadPoolExecutor(1).submit(c.completions.create, **{**long, "max_tokens": 5})
        for _ in range(200):
            if json.loads(get(f"{url}/health"))["waiting"] == 1:
                break
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as e:
            c.completions.create(**{**long, "max_tokens": 5})
        assert e.value.status_code == 429
        stream.close()  # the client goes away: its generation is cancelled, the queued one runs
        assert queued.result(timeout=60).choices[0].finish_reason in ("length", "stop")
        for _ in range(200):
            if metric(url, 'qwen_edge_finished_total{reason="cancelled"}') >= 1:
                break
            time.sleep(0.05)
        assert metric(url, 'qwen_edge_finished_total{reason="cancelled"}') == 1
        assert metric(url, "qwen_edge_completion_tokens_total") < 3000
        assert metric(url, "qwen_edge_active_sequences") == 0


def test_sixteen_requests_over_eight_clients_each_equal_its_solo_run(served):
    """Bounded load (16 requests, 8 at a time, greedy): nothing lost or mixed up, and they were
    decoded together (the peak of sequences in one step), not one after another."""
    url, model_id = served
    c = client(url)
    prompts = [f"Request number {i}: say something about {w}" for i, w in enumerate("abcdefghijklmnop")]

    def ask(p):
        r = c.chat.completions.create(model=model_id, messages=[{"role": "user", "content": p}], max_tokens=20,
                                      temperature=0)  # fmt: skip
        return r.choices[0].message.content, r.usage.completion_tokens

    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, prompts))
    assert together == alone
    assert metric(url, "qwen_edge_active_sequences_peak") >= 4


def test_sigterm_finishes_the_running_answer_then_exits(folder):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "qwen_edge.cli.main", "serve", str(folder), "--port", str(port), "--model-name", "m"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "QWEN_EDGE_API_KEY": ""})  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            with contextlib.suppress(OSError):
                get(f"{url}/health")
                break
            time.sleep(0.1)
        stream = client(url, key="-").completions.create(model="m", prompt="Go", max_tokens=400, temperature=0,
                                                         stream=True)  # fmt: skip
        chunks = iter(stream)
        first = next(chunks)
        proc.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert first.choices and rest[-1].choices[0].finish_reason == "length"  # it ran to its end
        # then the process ends: uvicorn re-raises the SIGTERM it held once it has drained
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_continued_conversation_reuses_its_cached_prefix(served, engine):
    url, model_id = served
    c = client(url)
    long = "Tell me about " + " ".join(["edge devices"] * 30)
    first = c.chat.completions.create(model=model_id, messages=[{"role": "user", "content": long}], max_tokens=8,
                                      temperature=0)  # fmt: skip
    turns = [{"role": "user", "content": long}, {"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And then?"}]  # fmt: skip
    second = c.chat.completions.create(model=model_id, messages=turns, max_tokens=8, temperature=0)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    ids = engine.tokenizer.encode(engine.tokenizer.apply_chat_template(turns))
    assert second.choices[0].message.content == engine.generate(ids, max_new_tokens=8).text


@pytest.mark.parametrize("batching, used", [("auto", "genai"), ("runtime", "runtime")])
def test_an_openvino_folder_serves_concurrent_requests_as_alone(export_kinds, batching, used):
    """Stateful OpenVINO folders batch through openvino_genai's ContinuousBatchingPipeline by
    default; --batching runtime interleaves them on our runtime (one forward each per step)."""
    _, tmp = export_kinds
    with running(tmp / "openvino", parallel=4, batching=batching) as (url, model_id):
        assert json.loads(get(f"{url}/health"))["batching"] == used
        c = client(url, key="-")

        def ask(p):
            return c.completions.create(model=model_id, prompt=p, max_tokens=12, temperature=0).choices[0].text

        prompts = [f"Prompt {i} about {w}" for i, w in enumerate(("rivers", "stones", "clouds", "music"))]
        alone = [ask(p) for p in prompts]
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ask, prompts)) == alone
        assert metric(url, "qwen_edge_active_sequences_peak") >= 2


def concurrent_greedy_chats(url, model_id, prompts, n):
    """Each prompt as a greedy chat request, all at once from 8 threads: (the answers, and the
    guesses kept and refused as their usage reports them)."""
    c = client(url)

    def ask(p):
        return c.chat.completions.create(model=model_id, messages=[{"role": "user", "content": p}], max_tokens=n,
                                         temperature=0)  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, prompts))
    details = [r.usage.completion_tokens_details for r in got if r.usage.completion_tokens_details]
    accepted = sum(d.accepted_prediction_tokens for d in details)
    return [r.choices[0].message.content for r in got], accepted, sum(d.rejected_prediction_tokens for d in details)


def test_prompt_lookup_answers_as_plain_decoding_and_reports_its_guesses(folder, engine):
    """serve --prompt-lookup: 8 concurrent greedy requests (4 rows) each answer exactly as plain
    decoding does alone; guesses were checked and kept (/metrics), and each answer's usage reports
    its own as OpenAI's predicted-output counts."""
    prompts = [f"Repeat after me: {w} one two three four {w} one two three four {w}" for w in "abcdefgh"]
    want = [solo_chat(engine, p, 24)[1].text for p in prompts]
    with running(folder, prompt_lookup=True, parallel=4, max_queue=16) as (url, model_id):
        texts, accepted, rejected = concurrent_greedy_chats(url, model_id, prompts, 24)
        assert texts == want
        assert metric(url, "qwen_edge_draft_tokens_total") == accepted + rejected > 0
        assert metric(url, "qwen_edge_draft_tokens_accepted_total") == accepted > 0
        c = client(url)
        sampled = [c.completions.create(model=model_id, prompt=prompts[0], max_tokens=16, temperature=0.9, seed=3)
                   for _ in range(2)]  # fmt: skip
        assert sampled[0].choices[0].text == sampled[1].choices[0].text  # a seed repeats a sampled answer


@pytest.fixture(scope="module")
def drafts(folder, tmp_path_factory):
    """Draft folders with the target's tokenizer: the target's own weights (guesses nearly always
    kept) and another random model (nearly always refused), so both paths of a check run."""
    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.shapes import random_model

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("drafts")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN_EDGE_CACHE", str(tmp / "cache"))
        export_onnx(str(write_gguf(random_model("tiny-untied", seed=9, std=0.1), tmp / "o.gguf")), tmp / "other")
    return {"same": folder, "other": tmp / "other"}


@pytest.mark.parametrize("draft", ["same", "other"])
def test_a_draft_model_answers_as_plain_decoding(folder, engine, drafts, draft):
    """serve --draft: each of 4 rows guesses with a draft KV cache of its own; 8 concurrent greedy
    requests answer exactly as plain decoding alone, and the guesses are counted in usage and
    /metrics (kept with the target's own weights as draft, refused with another model's)."""
    prompts = [f"Tell me about {w} and then {w} again" for w in "abcdefgh"]
    want = [solo_chat(engine, p, 20)[1].text for p in prompts]
    with running(folder, draft=str(drafts[draft]), draft_confidence=0.0, parallel=4, max_queue=16) as (url, model_id):
        texts, accepted, rejected = concurrent_greedy_chats(url, model_id, prompts, 20)
        assert texts == want
        assert metric(url, "qwen_edge_draft_tokens_total") == accepted + rejected > 0
        assert (accepted > rejected) if draft == "same" else (rejected > accepted)


def test_speculative_serving_is_refused_where_it_cannot_run(folder, drafts, export_kinds):
    """Guesses are checked by our runtime's batching: with openvino_genai's pipeline, or on a folder
    that is not a stateful IR, --batching genai is refused in one line naming the fix."""
    from qwen_edge.cli.serve import ServeError, make_app

    _, tmp = export_kinds
    for flag, option in (("--draft", {"draft": str(drafts["same"])}), ("--prompt-lookup", {"prompt_lookup": True})):
        with pytest.raises(ServeError, match=f"{flag} runs in our runtime's batching"):
            make_app(str(tmp / "openvino"), batching="genai", **option)
    with pytest.raises(ServeError, match="--batching genai needs a stateful OpenVINO IR"):
        make_app(str(folder), prompt_lookup=True, batching="genai")
