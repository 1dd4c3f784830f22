"""Run the main job on the real model: fetch, load, export, chat on ONNX Runtime, latency table.

Every step printed is a step that ran. Steps of the pipeline that this version does not have yet
are listed as not available, never simulated.
"""

from __future__ import annotations

import hashlib
import time

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."

# Pipeline steps the demo leaves out, in order; each is (name, why it is not run here).
NOT_YET = [
    (
        "quantize INT4 (NNCF)",
        "not part of this demo (it keeps to fp32): qwen-edge quantize FOLDER -o OUT, or export --target mobile",
    )
]


def configure_parser(p) -> None:
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="MODEL to run (default: the real 0.5B)")
    p.add_argument("-p", "--prompt", default=DEFAULT_PROMPT, help="user message, wrapped in the chat template")
    p.add_argument("--max-new-tokens", type=int, default=48)


def run(model: str = "qwen2.5-coder-0.5b-instruct", prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 48) -> dict:
    from qwen_edge.models import fetch, loaders
    from qwen_edge.models.reference import TorchStep
    from qwen_edge.runtime.engine import Engine
    from qwen_edge.runtime.tokenizer import Tokenizer

    timings = {}
    if model in fetch.KNOWN_FILES:
        t = time.perf_counter()
        path = fetch.fetch(fetch.KNOWN_FILES[model])
        timings["fetch + verify sha256"] = time.perf_counter() - t
        print(f"[fetch] {path} (sha256 verified)")
        model = str(path)

    t = time.perf_counter()
    loaded = loaders.load(model)
    timings["load into qwen_edge.models (torch fp32)"] = time.perf_counter() - t
    cfg = loaded.config
    print(
        f"[load] {cfg.model_type}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"{cfg.num_attention_heads}/{cfg.num_key_value_heads} heads, vocab {cfg.vocab_size}"
    )
    t = time.perf_counter()
    folder, reused = _export(loaded)
    timings["export ONNX (ort graph, fp32)" + (", reused" if reused else "")] = time.perf_counter() - t
    print(f"[export] {folder} ({'verified earlier export' if reused else 'ort graph, genai_config.json'})")
    for name, why in NOT_YET:
        print(f"[{name}] not run: {why}")
    if loaded.tokenizer_dir is None:
        print("[chat] skipped: this model has no tokenizer (random weights)")
        return {"timings": timings}

    tok = Tokenizer(loaded.tokenizer_dir)
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}]))
    print(f"[chat] user: {prompt}")
    runs = {}
    for name, step in (("ONNX Runtime", Engine.load(folder).step()), ("torch reference", TorchStep(loaded.model))):
        print(f"[chat] assistant ({name}): ", end="", flush=True)
        runs[name] = _stream(tok, step, ids, max_new_tokens)
    _table(timings, runs)
    return {"text": runs["ONNX Runtime"][0], "timings": timings, "stats": {k: vars(v[1]) for k, v in runs.items()}}


def _export(loaded):
    """The ort export of this model in the cache, made once and reused while it verifies."""
    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.fetch import cache_dir
    from qwen_edge.runtime.manifest import ManifestError, verify

    key = loaded.source.get("sha256") or hashlib.sha256(repr(sorted(loaded.source.items())).encode()).hexdigest()
    folder = cache_dir() / "exports" / f"{key[:16]}-ort"
    try:
        verify(folder)
        return folder, True
    except ManifestError:
        export_onnx(loaded, folder, graph="ort", max_context=2048, overwrite=True)
        return folder, False


def _stream(tok, step, ids, max_new_tokens):
    from qwen_edge.runtime.generate import Sampling, Stats, generate

    stats, out, shown = Stats(), [], ""
    for token in generate(step, ids, Sampling(max_new_tokens=max_new_tokens), tok.eos_token_ids, stats):
        out.append(token)
        text = tok.decode(out)
        if not text.endswith("\ufffd"):  # hold back half a multi-byte character
            print(text[len(shown) :], end="", flush=True)
            shown = text
    print()
    return tok.decode(out), stats


def _table(timings: dict, runs: dict) -> None:
    rows = [(name, f"{s:.2f} s") for name, s in timings.items()]
    for name, (_, stats) in runs.items():
        rows += [
            (f"{name}: time to first token ({stats.prompt_tokens} prompt tokens)", f"{stats.ttft_s:.3f} s"),
            (f"{name}: decode ({stats.new_tokens} tokens)", f"{stats.decode_tokens_per_s:.1f} tok/s"),
        ]
    width = max(len(r[0]) for r in rows)
    print("\nlatency (fp32, batch 1, greedy, this machine)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")
