"""Prompt-lookup settings compared without timing noise: replay plain greedy answers through each
PromptLookup setting and price every checking forward with the folder's measured cost.

    .venv/bin/python benchmarks/lookup_replay.py /tmp/q05/ort-int4 --json lookup_replay_ort.json

Greedy prompt lookup keeps a guess exactly when it is the plain greedy answer's next token, so which
guesses are kept, and how many positions each forward checks, follow from the plain answer alone
(`PromptLookup.propose` and `speculative.next_guesses`, the runtime's own code, replay them). Each
forward's cost is measured once on the folder, per number of positions fed (1 + guesses), median of
several runs at a context of the prompts' length, and one plain decode step likewise. The modelled
decode speed-up of a setting is (answer tokens x a plain step) / (sum of the forwards' costs).
Timed A/B runs of two settings (prompt_lookup.py --one-token-draft) move by +-8% between sittings
on this VM; the replay does not, so settings are chosen here and then checked in a timed run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from prompt_lookup import SETS, prompts

SETTINGS = {  # name -> PromptLookup(**fields)
    "default": {},
    "before one_token_draft (a 1-token match guessed up to 8)": {"one_token_draft": 8},
    "max_draft 4": {"max_draft": 4},
    "max_draft 12": {"max_draft": 12},
    "min_ngram 2 (no 1-token matches)": {"min_ngram": 2},
    "max_ngram 4": {"max_ngram": 4},
}


def forward_costs(plain, folder: Path, threads: int, context: int, most: int, rounds: int = 11) -> dict:
    """Seconds of one forward feeding n positions after `context` cached ones, n = 1..most, on the
    speculative engine's backend (every position's logits), and "plain": one position on `plain`
    (the plain engine's backend, already loaded). Round robin over n, so a drift of the machine's
    speed hits every n alike; medians. One backend at a time: right after another session's run its
    idle threads still spin."""
    import numpy as np

    from qwen_edge.runtime.backend import load

    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(100, 20000, context)]
    costs = {}
    for every, sizes in ((False, [1]), (True, list(range(1, most + 1)))):
        cache = (load(folder, threads=threads, all_logits=True) if every else plain).new_cache()
        cache.append(prompt, last=True)
        times = {n: [] for n in sizes}
        for _ in range(rounds + 2):
            for n in sizes:
                cache.trim(context)
                start = time.perf_counter()
                cache.append([int(t) for t in rng.integers(100, 20000, n)])
                times[n].append(time.perf_counter() - start)
        for n in sizes:
            costs[n if every else "plain"] = statistics.median(times[n][2:])
        del cache
    return costs


def replay(prompt: list[int], answer: list[int], fields: dict, costs: dict[int, float]) -> dict:
    """The forwards prompt lookup with `fields` makes for this greedy answer, and their cost."""
    from qwen_edge.runtime.speculative import PromptLookup, next_guesses

    lookup = PromptLookup(**fields)
    k, i, seconds, forwards, drafted, kept_all = min(lookup.start_draft, lookup.max_draft), 0, 0.0, 0, 0, 0
    while i < len(answer):  # answer[i] is known; the forward feeds it with the guesses
        room = len(answer) - i - 1
        draft = lookup.propose(prompt + answer[: i + 1], min(k, room)) if room > 0 else []
        kept = 0
        while kept < len(draft) and draft[kept] == answer[i + 1 + kept]:
            kept += 1
        seconds += costs[1 + len(draft)]
        forwards, drafted, kept_all, i = forwards + 1, drafted + len(draft), kept_all + kept, i + 1 + kept
        k = next_guesses(lookup, k, len(draft), kept)
    speedup = len(answer) * costs["plain"] / seconds
    return {"speedup": speedup, "forwards": forwards, "drafted": drafted, "kept": kept_all}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--new", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from qwen_edge.runtime import Engine
    from qwen_edge.runtime.speculative import PromptLookup
    from qwen_edge.runtime.tokenizer import Tokenizer

    tokenizer, plain = Tokenizer(args.folder), Engine.load(args.folder, threads=args.threads)
    answers = {name: [(ids, plain.generate(ids, max_new_tokens=args.new).token_ids) for ids in prompts(tokenizer, name)]
               for name in sorted(SETS)}  # fmt: skip
    length = round(statistics.median(len(ids) + len(a) / 2 for rows in answers.values() for ids, a in rows))
    most = 1 + max(f.get("max_draft", PromptLookup.max_draft) for f in SETTINGS.values())
    costs = forward_costs(plain.model, args.folder, args.threads, length, most)
    report = {"folder": str(args.folder), "context": length, "cost_ms": {n: s * 1e3 for n, s in costs.items()}}
    print(json.dumps({"context": length, "cost_ms": {n: round(s * 1e3, 2) for n, s in costs.items()}}), flush=True)
    for name, fields in SETTINGS.items():
        row = {"setting": name, "fields": fields}
        for set_name, rows in answers.items():
            runs = [replay(list(ids), list(a), fields, costs) for ids, a in rows]
            kept, drafted = sum(r["kept"] for r in runs), sum(r["drafted"] for r in runs)
            speedups = [r["speedup"] for r in runs]
            row[set_name] = {"median": statistics.median(speedups), "mean": statistics.mean(speedups),
                             "kept_share": kept / max(1, drafted)}  # fmt: skip
        report.setdefault("settings", []).append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
