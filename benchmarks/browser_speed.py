"""The phone bundle in headless Chromium and in native ONNX Runtime, side by side in one run.

    .venv/bin/python benchmarks/browser_speed.py /tmp/mob --runs 3 --json /tmp/browser_speed.json

Each run, in this order: the app (android_demo/, served by serve-demo's server on 127.0.0.1) in
headless Debian Chromium with the Pixel 7 profile and no CPU throttling, a two-turn chat typed as a
user would (greedy, --max-tokens per reply); then our runtime (qwen_edge.runtime.Engine, ONNX
Runtime CPU, the same thread count) on the same folder, the same two turns through runtime.Chat.
Reported per turn: TTFT, decode tokens/s, prompt tokens computed and reused (turn 2 should reuse
turn 1). Medians over runs; every run is in --json. The browser's numbers are what the app itself
measured (window.qwenEdge.replies), not what the driver saw.
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


def browser_run(bundle: Path, prompts, max_tokens: int, shot: Path) -> list[dict]:
    from qwen_edge.cli.serve_demo import make_server

    server = make_server(bundle, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
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
         "computed": t["reply"]["computed"], "reused": t["reply"]["reused"], "answer": t["answer"][:200]}
        for t in result["turns"]
    ]  # fmt: skip


def native_run(bundle: Path, prompts, max_tokens: int, threads: int) -> list[dict]:
    from qwen_edge.runtime import Engine

    chat = Engine.load(bundle, threads=threads).chat()
    turns = []
    for p in prompts:
        r = chat.ask(p, max_new_tokens=max_tokens, temperature=0.0)
        s = r.stats  # prompt_tokens: the part of the prompt computed (the rest came from the cache)
        turns.append({"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tokens_per_s, "tokens": s.new_tokens,
                      "computed": s.prompt_tokens, "reused": len(r.prompt_token_ids) - s.prompt_tokens,
                      "answer": r.text[:200]})  # fmt: skip
    return turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="a folder from qwen-edge export MODEL -o OUT --target mobile")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2, help="native threads; the app uses min(4, cores)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--screenshot", type=Path, default=Path("/tmp/browser_speed.png"))
    args = ap.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: make install sets up android_demo")
    runs = []
    for i in range(args.runs):
        browser = browser_run(args.bundle, PROMPTS, args.max_tokens, args.screenshot)
        native = native_run(args.bundle, PROMPTS, args.max_tokens, args.threads)
        runs.append({"browser": browser, "native": native})
        print(json.dumps({"run": i, **runs[-1]}), flush=True)
    rows = []
    for side in ("browser", "native"):
        for turn in range(len(PROMPTS)):
            med = {k: statistics.median(r[side][turn][k] for r in runs) for k in ("ttft_s", "decode_tok_s", "tokens")}
            first = runs[0][side][turn]
            rows.append({"runtime": side, "turn": turn + 1, **med, **{k: first[k] for k in ("computed", "reused")}})
    print("\n| runtime | turn | prompt tokens computed / reused | TTFT s | decode tok/s | new tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = (r["runtime"], r["turn"], f"{r['computed']} / {r['reused']}", f"{r['ttft_s']:.2f}",
                 f"{r['decode_tok_s']:.1f}", f"{r['tokens']:.0f}")  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
