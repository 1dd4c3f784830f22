"""Prompt-lookup speculative decoding on code edits: plain greedy decoding against prompt lookup on
the same folder, same prompts, alternating in one run; and openvino_genai's own prompt lookup
(LLMPipeline(prompt_lookup=True)) on OpenVINO folders.

    .venv/bin/python benchmarks/prompt_lookup.py /tmp/real-ort4 /tmp/real-ov4 --json /tmp/lookup.json

Each prompt is a function and an edit (rename, add a parameter, add a docstring, ...): the answer is
mostly the function again. Reported per folder: decode tokens/s (median over prompts), the speed-up
of decode and of the whole answer (prompt in to last token: what openvino_genai's figure is too),
whether the text is identical to plain greedy decoding, and the share of guesses kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

FUNCTIONS = [
    '''def moving_average(values, window):
    """Return the moving averages of values over window items."""
    if window <= 0:
        raise ValueError("window must be positive")
    result = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        if i >= window - 1:
            result.append(total / window)
    return result
''',
    """def parse_config(path):
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings
""",
    """class Counter:
    def __init__(self):
        self.counts = {}

    def add(self, item):
        self.counts[item] = self.counts.get(item, 0) + 1

    def most_common(self, n):
        return sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]
""",
]
EDITS = [
    "Rename every variable to a more descriptive name. Reply with the whole code only.",
    "Add type hints to every parameter and return value. Reply with the whole code only.",
    "Add a docstring to every function. Reply with the whole code only.",
]


def prompts(tokenizer) -> list[list[int]]:
    out = []
    for code in FUNCTIONS:
        for edit in EDITS:
            messages = [{"role": "user", "content": f"{code}\n{edit}"}]
            out.append(tokenizer.encode(tokenizer.apply_chat_template(messages)))
    return out


def ours(folder: Path, ids_list, new: int, threads: int) -> list[dict]:
    from qwen_edge.runtime import Engine
    from qwen_edge.runtime.speculative import PromptLookup

    plain = Engine.load(folder, threads=threads)
    spec = Engine.load(folder, threads=threads, speculative=True)
    plain.generate(ids_list[0][:16], max_new_tokens=4)  # warm-up
    spec.generate(ids_list[0][:16], max_new_tokens=4)
    rows = []
    for ids in ids_list:
        a = plain.generate(ids, max_new_tokens=new)
        b = spec.session().generate(ids, max_new_tokens=new, speculative=PromptLookup())
        rows.append({"plain_tok_s": a.stats.decode_tokens_per_s, "lookup_tok_s": b.stats.decode_tokens_per_s,
                     "plain_s": a.stats.total_s, "lookup_s": b.stats.total_s,
                     "identical": a.token_ids == b.token_ids, "tokens": len(b.token_ids),
                     "accepted": b.stats.accepted, "drafted": b.stats.drafted})  # fmt: skip
    return rows


def genai(folder: Path, ids_list, tokenizer, new: int, threads: int) -> list[dict]:
    import openvino_genai as ov_genai

    props = {"INFERENCE_NUM_THREADS": threads}
    plain = ov_genai.LLMPipeline(str(folder), "CPU", **props)
    lookup = ov_genai.LLMPipeline(str(folder), "CPU", prompt_lookup=True, **props)
    rows = []
    for ids in ids_list:
        text = tokenizer.decode(ids, skip_special_tokens=False)
        times = {}
        for name, pipe in (("plain", plain), ("lookup", lookup)):
            config = ov_genai.GenerationConfig()
            config.max_new_tokens, config.do_sample = new, False
            if name == "lookup":
                config.num_assistant_tokens, config.max_ngram_size = 5, 3
            start = time.perf_counter()
            result = pipe.generate(text, config)
            times[name] = time.perf_counter() - start
            times[name + "_text"] = str(result)
        rows.append({"plain_s": times["plain"], "lookup_s": times["lookup"],
                     "identical": times["plain_text"] == times["lookup_text"]})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--new", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from qwen_edge.runtime.tokenizer import Tokenizer

    report = {}
    for folder in args.folders:
        tokenizer = Tokenizer(folder)
        ids_list = prompts(tokenizer)
        rows = ours(folder, ids_list, args.new, args.threads)
        plain = statistics.median(r["plain_tok_s"] for r in rows)
        fast = statistics.median(r["lookup_tok_s"] for r in rows)
        kept = sum(r["accepted"] for r in rows) / max(1, sum(r["drafted"] for r in rows))
        summary = {"plain_tok_s": plain, "lookup_tok_s": fast, "speedup": fast / plain,
                   "total_speedup": statistics.median(r["plain_s"] / r["lookup_s"] for r in rows),
                   "identical": sum(r["identical"] for r in rows), "prompts": len(rows),
                   "kept_share": kept}  # fmt: skip
        if (folder / "openvino_model.xml").exists():
            g = genai(folder, ids_list, tokenizer, args.new, args.threads)
            summary["genai_lookup_speedup"] = statistics.median(r["plain_s"] / r["lookup_s"] for r in g)
            summary["genai_identical"] = sum(r["identical"] for r in g)
        report[str(folder)] = {"summary": summary, "rows": rows}
        print(json.dumps({"folder": str(folder), **summary}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
