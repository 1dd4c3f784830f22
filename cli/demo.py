"""The main job on the real model: fetch, INT4 in both formats, a chat answer from each backend, one latency table.

Fetches the real Qwen2.5-Coder-0.5B-Instruct (once), exports it to INT4 as an ONNX Runtime folder
and an OpenVINO folder (the default recipes; cached in the user cache and reused while they
verify), answers one chat prompt on each, then measures both folders side by side with the
runtimes users would otherwise pick on the same files: onnxruntime-genai, openvino_genai's
LLMPipeline, and llama.cpp on the original GGUF when llama-cpp-python is installed. Every step
printed is a step that ran.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

DEFAULT_PROMPT = "Write a Python function that checks whether a number is prime."
FORMATS = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}
COMPARED = "ours,ort-genai,llm-pipeline,llama.cpp"


def configure_parser(p) -> None:
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="MODEL to run (default: the real 0.5B)")
    p.add_argument("-p", "--prompt", default=DEFAULT_PROMPT, help="user message, wrapped in the chat template")
    p.add_argument("--max-new-tokens", type=int, default=64, help="length of each chat answer")
    p.add_argument("--bench-prompt", type=int, default=128, help="prompt tokens in the latency table")
    p.add_argument("--bench-new", type=int, default=32, help="new tokens in the latency table")
    p.add_argument("--runs", type=int, default=1, help="rounds of the latency table (each a fresh process)")
    p.add_argument("--no-bench", action="store_true", help="skip the latency table")


def run(
    model: str = "qwen2.5-coder-0.5b-instruct",
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 64,
    bench_prompt: int = 128,
    bench_new: int = 32,
    runs: int = 1,
    no_bench: bool = False,
) -> dict:
    from qwen_edge.models import fetch

    timings: dict[str, float] = {}
    if model.lower() in fetch.KNOWN_FILES:
        t = time.perf_counter()
        path = fetch.fetch(fetch.KNOWN_FILES[model.lower()])
        timings["fetch + verify sha256"] = time.perf_counter() - t
        print(f"[fetch] {path} (sha256 verified)")
        model = str(path)

    folders = _exports(model, timings)
    answers = {}
    for fmt, folder in folders.items():
        answers[fmt] = _chat(folder, FORMATS[fmt], prompt, max_new_tokens, timings)
    result = {"folders": {k: str(v) for k, v in folders.items()}, "answers": answers, "timings": timings}
    if not no_bench:
        from .bench import run as bench

        print(f"\n[bench] {bench_prompt}-token prompts, {bench_new} new tokens, greedy, one process per runtime")
        t = time.perf_counter()
        result["bench"] = bench(
            [str(f) for f in folders.values()], prompt_lengths=str(bench_prompt), new_tokens=str(bench_new),
            runs=runs, compare=True, runtimes=COMPARED,
        )  # fmt: skip
        timings["latency table"] = time.perf_counter() - t
    print("\n[steps]")
    width = max(len(name) for name in timings)
    for name, seconds in timings.items():
        print(f"  {name:<{width}}  {seconds:7.1f} s")
    return result


def _exports(model: str, timings: dict) -> dict[str, Path]:
    """INT4 ONNX and OpenVINO folders of MODEL in the user cache: reused while they verify, else
    built from one load of the model."""
    from qwen_edge.models.fetch import cache_dir
    from qwen_edge.runtime.manifest import ManifestError, verify

    key = _key(model)
    folders = {fmt: cache_dir() / "exports" / f"{key}-{fmt}-int4" for fmt in FORMATS}
    loaded = None
    for fmt, folder in folders.items():
        t = time.perf_counter()
        try:
            verify(folder)
            timings[f"{FORMATS[fmt]} INT4 folder: reused"] = time.perf_counter() - t
            print(f"[export] {folder}: {FORMATS[fmt]} INT4, built earlier, verified")
            continue
        except ManifestError:
            pass
        from qwen_edge.models.loaders import load
        from qwen_edge.quantize.pipeline import build

        if loaded is None:
            loaded = load(model)
            timings["load the model (torch)"] = time.perf_counter() - t
            cfg = loaded.config
            print(f"[load] {cfg.model_type}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
                  f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads, vocab {cfg.vocab_size}")  # fmt: skip
            t = time.perf_counter()
        [manifest] = build(loaded, folder, format=fmt, quantize="int4", overwrite=True)
        timings[f"{FORMATS[fmt]} INT4 folder: export + NNCF"] = time.perf_counter() - t
        recipe = manifest.get("recipe", {})
        size = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
        print(f"[export] {folder}: {FORMATS[fmt]} INT4 ({recipe.get('name', 'int4')}), {size:.0f} MB")
    return folders


def _key(model: str) -> str:
    """Names the cached exports: the model file's verified sha256, else its path and mtime."""
    from qwen_edge.models.fetch import verified_sha256

    path = Path(model)
    if path.is_file():
        sha = verified_sha256(path)
        if sha:
            return sha[:16]
        st = path.stat()
        return hashlib.sha256(f"{path.resolve()} {st.st_size} {st.st_mtime_ns}".encode()).hexdigest()[:16]
    return hashlib.sha256(model.encode()).hexdigest()[:16]


def _chat(folder: Path, backend: str, prompt: str, max_new_tokens: int, timings: dict) -> str:
    from qwen_edge.runtime.engine import Engine

    t = time.perf_counter()
    engine = Engine.load(folder)
    timings[f"{backend}: load"] = time.perf_counter() - t
    chat = engine.chat()
    print(f"\n[chat] {backend} ({engine.backend}, {engine.manifest.precision}) user: {prompt}")
    print("[chat] assistant: ", end="", flush=True)
    t = time.perf_counter()
    for piece in chat.send(prompt, max_new_tokens=max_new_tokens):
        print(piece, end="", flush=True)
    stats = chat.last.stats
    timings[f"{backend}: chat answer"] = time.perf_counter() - t
    print(f"\n[chat] {stats.prompt_tokens} prompt tokens, {stats.new_tokens} new: TTFT {1e3 * stats.ttft_s:.0f} ms, "
          f"decode {stats.decode_tokens_per_s:.1f} tok/s")  # fmt: skip
    return chat.last.text
