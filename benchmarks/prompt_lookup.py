"""Prompt-lookup speculative decoding on code edits: plain greedy decoding against prompt lookup on
the same folder, same prompts, alternating in one run; and openvino_genai's own prompt lookup
(LLMPipeline(prompt_lookup=True)) on OpenVINO folders.

    .venv/bin/python benchmarks/prompt_lookup.py /tmp/real-ort4 /tmp/real-ov4 --json /tmp/lookup.json

Each prompt is a function and an edit. Two sets: "edits" (rename, type hints, docstrings: the answer
is mostly the function again; the issue's set) and "rewrites" (logging, comments, validation: more
new text), the second kept apart so a lookup setting tuned on one is checked on the other.
`--one-token-draft 1 8` runs prompt lookup once per setting of PromptLookup.one_token_draft (the
guesses after a one-token match; 8 was the behaviour before it existed), all side by side.

Reported per folder and set: decode tokens/s (median over prompts), the speed-up of decode and of
the whole answer (prompt in to last token: what openvino_genai's figure is too), whether the text is
identical to plain greedy decoding, and the share of guesses kept.
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


REWRITE_FUNCTIONS = [
    """def merge_intervals(intervals):
    intervals = sorted(intervals)
    merged = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
""",
    """def word_frequencies(text, stopwords=()):
    counts = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?")
        if not word or word in stopwords:
            continue
        counts[word] = counts.get(word, 0) + 1
    return counts
""",
    """class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from an empty stack")
        return self.items.pop()

    def peek(self):
        return self.items[-1] if self.items else None
""",
]
REWRITES = [
    "Add a `verbose` parameter that logs what the code does. Reply with the whole code only.",
    "Rewrite it in snake_case with comments explaining each step. Reply with the whole code only.",
    "Add input validation that raises TypeError on wrong types. Reply with the whole code only.",
]
SETS = {"edits": (FUNCTIONS, EDITS), "rewrites": (REWRITE_FUNCTIONS, REWRITES)}


def prompts(tokenizer, name: str = "edits") -> list[list[int]]:
    functions, edits = SETS[name]
    out = []
    for code in functions:
        for edit in edits:
            messages = [{"role": "user", "content": f"{code}\n{edit}"}]
            out.append(tokenizer.encode(tokenizer.apply_chat_template(messages)))
    return out


def engines(folder: Path, threads: int):
    """Our plain and speculative engines for `folder`, warmed up (loaded once for every prompt set)."""
    from qwen_edge.runtime import Engine

    plain = Engine.load(folder, threads=threads)
    spec = Engine.load(folder, threads=threads, speculative=True)
    for engine in (plain, spec):
        engine.generate([9707, 11, 1879], max_new_tokens=4)  # warm-up
    return plain, spec


def ours(plain, spec, ids_list, new: int, one_token_drafts: list[int]) -> list[dict]:
    """One row per prompt: plain, then prompt lookup with each one_token_draft setting, in turn."""
    from qwen_edge.runtime.speculative import PromptLookup

    rows = []
    for ids in ids_list:
        a = plain.generate(ids, max_new_tokens=new)
        row = {"plain_tok_s": a.stats.decode_tokens_per_s, "plain_s": a.stats.total_s}
        for n in one_token_drafts:
            b = spec.session().generate(ids, max_new_tokens=new, speculative=PromptLookup(one_token_draft=n))
            row[n] = {"lookup_tok_s": b.stats.decode_tokens_per_s, "lookup_s": b.stats.total_s,
                      "identical": a.token_ids == b.token_ids, "tokens": len(b.token_ids),
                      "accepted": b.stats.accepted, "drafted": b.stats.drafted}  # fmt: skip
        rows.append(row)
    return rows


def summarize(rows: list[dict], n: int) -> dict:
    plain = statistics.median(r["plain_tok_s"] for r in rows)
    fast = statistics.median(r[n]["lookup_tok_s"] for r in rows)
    return {"one_token_draft": n, "plain_tok_s": plain, "lookup_tok_s": fast,
            "speedup": fast / plain,  # of the medians, as in earlier rows of RESULTS.md
            "speedup_per_prompt": statistics.median(r[n]["lookup_tok_s"] / r["plain_tok_s"] for r in rows),
            "total_speedup": statistics.median(r["plain_s"] / r[n]["lookup_s"] for r in rows),
            "identical": sum(r[n]["identical"] for r in rows), "prompts": len(rows),
            "kept_share": sum(r[n]["accepted"] for r in rows) / max(1, sum(r[n]["drafted"] for r in rows))}  # fmt: skip


def genai_pipelines(folder: Path, threads: int):
    """openvino_genai's plain and prompt-lookup LLMPipelines for `folder` (built once per folder)."""
    import openvino_genai as ov_genai

    props = {"INFERENCE_NUM_THREADS": threads}
    plain = ov_genai.LLMPipeline(str(folder), "CPU", **props)
    return plain, ov_genai.LLMPipeline(str(folder), "CPU", prompt_lookup=True, **props)


def genai(pipes, ids_list, tokenizer, new: int) -> list[dict]:
    import openvino_genai as ov_genai

    plain, lookup = pipes
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
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    ap.add_argument("--one-token-draft", nargs="+", type=int, default=[1], help="PromptLookup settings to compare")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from qwen_edge.runtime.tokenizer import Tokenizer

    report = {}
    for folder in args.folders:
        tokenizer, (plain, spec) = Tokenizer(folder), engines(folder, args.threads)
        pipes = genai_pipelines(folder, args.threads) if (folder / "openvino_model.xml").exists() else None
        for name in args.sets:
            ids_list = prompts(tokenizer, name)
            rows = ours(plain, spec, ids_list, args.new, args.one_token_draft)
            summaries = [summarize(rows, n) for n in args.one_token_draft]
            if pipes:
                g = genai(pipes, ids_list, tokenizer, args.new)
                summaries.append({"genai_lookup_speedup": statistics.median(r["plain_s"] / r["lookup_s"] for r in g),
                                  "genai_identical": sum(r["identical"] for r in g)})  # fmt: skip
            report[f"{folder} {name}"] = {"summaries": summaries, "rows": rows}
            for summary in summaries:
                print(json.dumps({"folder": str(folder), "set": name, **summary}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
