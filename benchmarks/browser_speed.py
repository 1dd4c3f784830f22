"""The phone bundle in headless Chromium and in native ONNX Runtime, side by side in one run.

    .venv/bin/python benchmarks/browser_speed.py /tmp/mob --runs 3 --json /tmp/browser_speed.json

Each run, in this order: the app (android_demo/, served by serve-demo's server on 127.0.0.1) in
headless Debian Chromium with the Pixel 7 profile and no CPU throttling, a two-turn chat typed as a
user would (greedy, --max-tokens per reply); then our runtime (qwen_edge.runtime.Engine, ONNX
Runtime CPU, the same thread count) on the same folder, the same two turns through runtime.Chat.
Reported per turn: TTFT, decode tokens/s, prompt tokens computed and reused (turn 2 should reuse
turn 1). Medians over runs; every run is in --json. The browser's numbers are what the app itself
measured (window.qwenEdge.replies), not what the driver saw. With --lookup, both also run with
prompt lookup (the app's default on WebAssembly; `?lookup=0` turns it off; natively
Engine.load(speculative=True) and PromptLookup()), and the share of guesses kept is reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import threading
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "android_demo"
PROMPTS = (
    "Write a Python function that checks whether a string is a palindrome.",
    "Now make it ignore case and punctuation.",
)


def browser_run(bundle: Path, prompts, max_tokens: int, shot: Path, lookup: bool) -> list[dict]:
    from qwen_edge.cli.serve_demo import make_server

    server = make_server(bundle, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/" + ("" if lookup else "?lookup=0")
    cmd = ["node", "test/e2e.mjs", url, str(shot), "--throttle", "1", "--temperature", "0",
           "--max-tokens", str(max_tokens)]  # fmt: skip
    for p in prompts:
        cmd += ["--prompt", p]
    try:
        out = subprocess.run(cmd, cwd=DEMO, capture_output=True, text=True, timeout=3600, check=False)
    finally:
        server.shutdown()
        server.server_close()
    result = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    if result.get("error") or any(t.get("state") == "error" for t in result["turns"]):
        raise SystemExit(f"the browser run failed: {json.dumps(result)[:2000]}")
    return [
        {"ttft_s": t["reply"]["ttft_s"], "decode_tok_s": t["reply"]["decode_tok_s"], "tokens": t["reply"]["tokens"],
         "computed": t["reply"]["computed"], "reused": t["reply"]["reused"], "answer": t["answer"][:200],
         "drafted": t["reply"].get("drafted") or 0, "accepted": t["reply"].get("accepted") or 0}
        for t in result["turns"]
    ]  # fmt: skip


def native_run(bundle: Path, prompts, max_tokens: int, threads: int, lookup: bool) -> list[dict]:
    from qwen_edge.runtime import Engine
    from qwen_edge.runtime.speculative import PromptLookup

    chat = Engine.load(bundle, threads=threads, speculative=lookup).chat()
    turns = []
    for p in prompts:
        r = chat.ask(p, max_new_tokens=max_tokens, temperature=0.0, speculative=PromptLookup() if lookup else None)
        s = r.stats  # prompt_tokens: the part of the prompt computed (the rest came from the cache)
        turns.append({"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tokens_per_s, "tokens": s.new_tokens,
                      "computed": s.prompt_tokens, "reused": len(r.prompt_token_ids) - s.prompt_tokens,
                      "answer": r.text[:200], "drafted": s.drafted, "accepted": s.accepted})  # fmt: skip
    return turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="a folder from qwen-edge export MODEL -o OUT --target mobile")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2, help="native threads; the app uses min(4, cores)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--screenshot", type=Path, default=Path("/tmp/browser_speed.png"))
    ap.add_argument("--lookup", action="store_true", help="also run both with prompt lookup")
    args = ap.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: make install sets up android_demo")
    sides = [("browser", False), ("native", False)]
    sides += [("browser+lookup", True), ("native+lookup", True)] if args.lookup else []
    runs = []
    for i in range(args.runs):
        run = {}
        for side, lookup in sides:
            if side.startswith("browser"):
                run[side] = browser_run(args.bundle, PROMPTS, args.max_tokens, args.screenshot, lookup)
            else:
                run[side] = native_run(args.bundle, PROMPTS, args.max_tokens, args.threads, lookup)
        runs.append(run)
        print(json.dumps({"run": i, **run}), flush=True)
    rows = []
    for side, _ in sides:
        for turn in range(len(PROMPTS)):
            med = {k: statistics.median(r[side][turn][k] for r in runs) for k in ("ttft_s", "decode_tok_s", "tokens")}
            kept = [r[side][turn]["accepted"] / r[side][turn]["drafted"] for r in runs if r[side][turn]["drafted"]]
            first = runs[0][side][turn]
            rows.append({"runtime": side, "turn": turn + 1, **med, **{k: first[k] for k in ("computed", "reused")},
                         "kept": statistics.median(kept) if kept else None})  # fmt: skip
    print("\n| runtime | turn | prompt tokens computed / reused | TTFT s | decode tok/s | new tokens | guesses kept |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        kept = "—" if r["kept"] is None else f"{r['kept']:.0%}"
        cells = (r["runtime"], r["turn"], f"{r['computed']} / {r['reused']}", f"{r['ttft_s']:.2f}",
                 f"{r['decode_tok_s']:.1f}", f"{r['tokens']:.0f}", kept)  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
