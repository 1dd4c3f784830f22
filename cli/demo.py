"""Run the main job on the real model: fetch, load, (export, quantize), chat, latency table.

Every step printed is a step that ran. Steps of the pipeline that this version does not have yet
are listed as not available, never simulated.
"""

from __future__ import annotations

import time

DEFAULT_PROMPT = "What is the capital of France? Answer in one sentence."

# Pipeline steps a later version adds here, in order; each is (name, why it is not run yet).
NOT_YET = [
    ("export ONNX / OpenVINO IR", "the exporter is not in this version yet"),
    ("quantize INT4 (NNCF)", "quantization is not in this version yet"),
]


def configure_parser(p) -> None:
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="MODEL to run (default: the real 0.5B)")
    p.add_argument("-p", "--prompt", default=DEFAULT_PROMPT, help="user message, wrapped in the chat template")
    p.add_argument("--max-new-tokens", type=int, default=48)


def run(model: str = "qwen2.5-coder-0.5b-instruct", prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 48) -> dict:
    from qwen_edge.models import fetch, loaders
    from qwen_edge.models.reference import TorchStep
    from qwen_edge.runtime.generate import Sampling, Stats, generate
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
    for name, why in NOT_YET:
        print(f"[{name}] not run: {why}")
    if loaded.tokenizer_dir is None:
        print("[generate] skipped: this model has no tokenizer (random weights)")
        return {"timings": timings}

    tok = Tokenizer(loaded.tokenizer_dir)
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": prompt}]))
    print(f"[chat] user: {prompt}\n[chat] assistant: ", end="", flush=True)
    stats, out, shown = Stats(), [], ""
    for token in generate(
        TorchStep(loaded.model), ids, Sampling(max_new_tokens=max_new_tokens), tok.eos_token_ids, stats
    ):
        out.append(token)
        text = tok.decode(out)
        if not text.endswith("\ufffd"):  # hold back half a multi-byte character
            print(text[len(shown) :], end="", flush=True)
            shown = text
    print()
    rows = [(name, f"{s:.2f} s") for name, s in timings.items()] + [
        ("prompt tokens", str(stats.prompt_tokens)),
        ("new tokens", str(stats.new_tokens)),
        ("time to first token", f"{stats.ttft_s:.3f} s"),
        ("decode speed", f"{stats.decode_tokens_per_s:.1f} tok/s"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\nlatency (torch reference, this machine)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")
    return {"text": tok.decode(out), "timings": timings, "stats": vars(stats)}
