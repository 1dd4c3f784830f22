"""Draft-model speculative decoding on real models: Qwen2.5-Coder-1.5B-Instruct INT4 checked against
guesses from Qwen2.5-Coder-0.5B-Instruct INT4, general chat prompts, greedy — ours (OpenVINO and
ONNX Runtime folders) and openvino_genai's LLMPipeline with a draft model, on the same IR folders.

    .venv/bin/python benchmarks/draft_speculation.py [--target-ov T_IR --draft-ov D_IR] \
        [--target-ort T_ORT --draft-ort D_ORT] [--new 128] [--rounds 2] [--json out.json]

Each mode runs every prompt in a fresh process (load and a warm-up excluded); modes interleave
round by round. Decode tokens/s = (new tokens - 1) / (generation time - TTFT), summed over the
prompts. Ours with a draft must give exactly ours without (checked); openvino_genai's two modes
are compared with each other. num_assistant_tokens for openvino_genai: --assistant (default 5).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

PROMPTS = [
    "Explain how photosynthesis works.",
    "What were the main causes of the French Revolution?",
    "Give me three tips for a job interview.",
    "Write a short story about a robot learning to paint.",
    "How does a hash map work?",
    "Summarize the plot of Romeo and Juliet.",
]

WORKER = r"""
import json, sys, time
mode, target, draft, new, assistant = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
prompts = json.loads(sys.argv[6])
from qwen_edge.runtime import Engine
tokenizer = Engine.load(target, verify=False).tokenizer if mode.startswith("genai") else None
rows = []
if mode == "ours-draft-spinning":  # as before engine.TAKING_TURNS: both sessions' idle threads spin
    spin = {"session.intra_op.allow_spinning": "1"}
    engine = Engine.load(target, config=spin, draft=Engine.load(draft, config=spin), warm_up=True)
elif mode.startswith("ours"):
    engine = Engine.load(target, draft=draft if mode == "ours-draft" else None, warm_up=True)
if mode.startswith("ours"):
    tokenizer = engine.tokenizer
    for text in prompts:
        ids = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}]))
        r = engine.session().generate(ids, max_new_tokens=new)
        rows.append({"new": r.stats.new_tokens, "ttft_s": r.stats.ttft_s, "total_s": r.stats.total_s,
                     "drafted": r.stats.drafted, "accepted": r.stats.accepted, "text": r.text})
else:
    import openvino_genai as g
    extra = {"draft_model": g.draft_model(draft, "CPU")} if mode == "genai-draft" else {}
    pipe = g.LLMPipeline(target, "CPU", **extra)
    config = g.GenerationConfig()
    config.max_new_tokens, config.do_sample, config.apply_chat_template = new, False, False
    if extra:
        config.num_assistant_tokens = assistant
    pipe.generate("hello", config)  # warm-up, as ours
    for text in prompts:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}])
        r = pipe.generate([prompt], config)
        m = r.perf_metrics
        rows.append({"new": m.get_num_generated_tokens(), "ttft_s": m.get_ttft().mean / 1000,
                     "total_s": m.get_generate_duration().mean / 1000, "text": r.texts[0]})
print(json.dumps(rows))
"""


def run_mode(mode: str, target: str, draft: str, new: int, assistant: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, mode, target, draft, str(new), str(assistant), json.dumps(PROMPTS)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{mode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(rows: list[dict]) -> dict:
    decode_s = sum(r["total_s"] - r["ttft_s"] for r in rows)
    tokens = sum(r["new"] - 1 for r in rows)
    out = {"decode_tok_s": tokens / decode_s, "new_tokens": sum(r["new"] for r in rows),
           "ttft_s": statistics.median(r["ttft_s"] for r in rows),
           "text_sha": hashlib.sha256("\x00".join(r["text"] for r in rows).encode()).hexdigest()[:12]}  # fmt: skip
    if any("drafted" in r for r in rows):
        drafted = sum(r.get("drafted", 0) for r in rows)
        out["acceptance"] = sum(r.get("accepted", 0) for r in rows) / drafted if drafted else 0.0
    return out


def main(target_ov, draft_ov, target_ort, draft_ort, new, rounds, assistant, spinning, json_path) -> None:
    modes = []
    if target_ov:
        modes += [("ov", "ours-plain", target_ov, draft_ov), ("ov", "ours-draft", target_ov, draft_ov),
                  ("ov", "genai-plain", target_ov, draft_ov), ("ov", "genai-draft", target_ov, draft_ov)]  # fmt: skip
    if target_ort:
        modes += [("ort", "ours-plain", target_ort, draft_ort), ("ort", "ours-draft", target_ort, draft_ort)]
        if spinning:
            modes.append(("ort", "ours-draft-spinning", target_ort, draft_ort))
    results: dict[str, list[dict]] = {}
    for round_ in range(rounds):
        for fmt, mode, target, draft in modes:
            s = summary(run_mode(mode, target, draft, new, assistant))
            results.setdefault(f"{fmt} {mode}", []).append(s)
            print(round_, fmt, mode, json.dumps(s), flush=True)
    table = {}
    for key, runs in results.items():
        table[key] = {
            "decode_tok_s": statistics.median(r["decode_tok_s"] for r in runs),
            "ttft_s": statistics.median(r["ttft_s"] for r in runs),
            "acceptance": runs[0].get("acceptance"), "new_tokens": runs[0]["new_tokens"],
            "text_sha": sorted({r["text_sha"] for r in runs}),
        }  # fmt: skip
    print("\n| folder | mode | decode tok/s | vs plain | TTFT (median) | acceptance | new tokens | text |")
    print("|---|---|---|---|---|---|---|---|")
    for key, row in table.items():
        fmt, mode = key.split()
        plain = table[f"{fmt} {mode.split('-')[0]}-plain"]["decode_tok_s"]  # ours-draft-spinning: ours-plain
        acc = f"{row['acceptance']:.2f}" if row["acceptance"] is not None else "—"
        shas = ",".join(row["text_sha"])
        print(f"| {fmt} | {mode} | {row['decode_tok_s']:.1f} | {row['decode_tok_s'] / plain:.2f}x | "
              f"{row['ttft_s'] * 1000:.0f} ms | {acc} | {row['new_tokens']} | {shas} |")  # fmt: skip
    for fmt in ("ov", "ort"):
        if f"{fmt} ours-draft" in table:
            same = table[f"{fmt} ours-draft"]["text_sha"] == table[f"{fmt} ours-plain"]["text_sha"]
            print(f"{fmt}: ours with the draft gives ours' plain text: {same}")
    if json_path:
        Path(json_path).write_text(json.dumps({"prompts": PROMPTS, "new": new, "rounds": rounds, "modes": table,
                                               "runs": results}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target-ov")
    p.add_argument("--draft-ov")
    p.add_argument("--target-ort")
    p.add_argument("--draft-ort")
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--assistant", type=int, default=5, help="openvino_genai's num_assistant_tokens")
    p.add_argument("--spinning", action="store_true", help="also the ort draft with ONNX Runtime's thread spinning on")
    p.add_argument("--json", dest="json_path")
    main(**vars(p.parse_args()))
