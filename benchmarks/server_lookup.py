"""`qwen-edge serve --prompt-lookup` (or `--draft FOLDER`) against the plain server on code edits (issue #18).

    .venv/bin/python benchmarks/server_lookup.py /tmp/real-ort4 --clients 1,4 --rounds 2 --json OUT.json
    .venv/bin/python benchmarks/server_lookup.py TARGET --draft SMALL_FOLDER --clients 1,4 --json OUT.json

The 9 code-editing chat prompts of benchmarks/prompt_lookup.py (a function and "rename / add type
hints / add docstrings": the answer is mostly the function again), greedy, up to --new tokens, each
answer ending where the model ends it. For each round, the plain server and then the prompt-lookup
server (serve's app under uvicorn on 127.0.0.1, --parallel = the most clients, stopped at the end),
each warmed up; then per client count c, the 9 prompts spread over c streaming clients. Per level:
aggregate throughput (completion tokens / wall time), median per-request decode rate (after the
first token), p50 TTFT, the guesses kept (usage's accepted / rejected prediction tokens), and whether
every answer equals the plain server's answer to the same prompt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prompt_lookup import EDITS, FUNCTIONS
from server_load import server


def ask(client, model_id: str, content: str, new: int) -> dict:
    start, first, pieces, usage = time.perf_counter(), None, [], None
    stream = client.chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": content}], max_tokens=new, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    details = usage.completion_tokens_details
    return {"text": "".join(pieces), "tokens": usage.completion_tokens, "ttft_s": first - start,
            "decode_tok_s": (usage.completion_tokens - 1) / (end - first),
            "accepted": details.accepted_prediction_tokens if details else 0,
            "rejected": details.rejected_prediction_tokens if details else 0}  # fmt: skip


def level(url: str, model_id: str, contents: list[str], clients: int, new: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=900)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda c: ask(client, model_id, c, new), contents))
    wall = time.perf_counter() - t0
    drafted = sum(r["accepted"] + r["rejected"] for r in results)
    return {"clients": clients, "wall_s": wall, "tokens": sum(r["tokens"] for r in results),
            "throughput_tok_s": sum(r["tokens"] for r in results) / wall,
            "decode_tok_s_p50": statistics.median(r["decode_tok_s"] for r in results),
            "ttft_p50_s": statistics.median(r["ttft_s"] for r in results),
            "kept_share": sum(r["accepted"] for r in results) / drafted if drafted else None,
            "texts": [r["text"] for r in results]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--new", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft", type=Path, help="measure serve --draft FOLDER instead of --prompt-lookup")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    guessing = ("--draft", {"draft": str(args.draft)}) if args.draft else ("--prompt-lookup", {"prompt_lookup": True})
    modes = {"plain": {}, guessing[0]: guessing[1]}
    contents = [f"{code}\n{edit}" for code in FUNCTIONS for edit in EDITS]
    levels = [int(c) for c in args.clients.split(",")]
    runs = []
    for rnd in range(args.rounds):
        for mode, options in modes.items():
            with server(args.folder, max(levels), args.threads, "runtime", **options) as (url, model_id):
                level(url, model_id, ["warm up"], 1, 8)
                for c in levels:
                    r = {"round": rnd, "mode": mode, **level(url, model_id, contents, c, args.new)}
                    runs.append(r)
                    print(json.dumps({k: v for k, v in r.items() if k != "texts"}), flush=True)
    plain = next(r["texts"] for r in runs if r["mode"] == "plain")
    rows = []
    for mode in modes:
        for c in levels:
            mine = [r for r in runs if r["mode"] == mode and r["clients"] == c]
            med = {k: statistics.median(r[k] for r in mine) for k in ("throughput_tok_s", "decode_tok_s_p50",
                                                                     "ttft_p50_s")}  # fmt: skip
            kept = [r["kept_share"] for r in mine if r["kept_share"] is not None]
            same = sum(a == b for r in mine for a, b in zip(r["texts"], plain, strict=True))
            rows.append({"mode": mode, "clients": c, **med, "kept_share": statistics.median(kept)
                         if kept else None, "identical_to_plain": f"{same} of {len(mine) * len(plain)}"})  # fmt: skip
    print("\n| server | clients | throughput tok/s | per-request decode tok/s | TTFT p50 | guesses kept | same text |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        kept = f"{100 * r['kept_share']:.0f}%" if r["kept_share"] is not None else "—"
        print(f"| {r['mode']} | {r['clients']} | {r['throughput_tok_s']:.1f} | {r['decode_tok_s_p50']:.1f} | "
              f"{r['ttft_p50_s']:.2f} s | {kept} | {r['identical_to_plain']} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
