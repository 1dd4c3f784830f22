"""`qwen-edge serve` under load: 1 client, then N concurrent streaming clients, same requests.

    .venv/bin/python benchmarks/server_load.py /tmp/real-ort4 /tmp/real-ov4 --clients 1,8 --json /tmp/load.json
    .venv/bin/python benchmarks/server_load.py /tmp/real-ort4 --url http://127.0.0.1:8090/v1 --model m \
        --extra '{"logit_bias": {"151643": -100, "151645": -100}}'     # another OpenAI server (llama.cpp's)

For each folder: the server (serve's app under uvicorn in this process, or with --subprocess
`qwen-edge serve` as a process of its own; 127.0.0.1, a free port; a fresh server per level, so no
level answers from a prefix another cached) with --parallel N; a warm-up request; then for each
client count c, c threads each send --requests streaming /v1/completions requests one after another
(every prompt distinct, exactly --prompt-tokens tokens; greedy; ignore_eos so every answer has
--new tokens). Per request: TTFT (request sent -> first text chunk) and its end; per level:
aggregate throughput (all generated tokens / wall time of the level), aggregate decode throughput
(tokens after each request's first / the time during which any request was past its first token),
p50 / p90 TTFT, and each client's decode rate. The answers of the c-client level that the 1-client
level also sent (--check-all: every one) are checked against it: a batch must not change a greedy
answer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

WORDS = "alpha beta gamma delta river stone cloud music paper window garden orange silver market engine".split()


@contextlib.contextmanager
def server(folder: Path, parallel: int, threads: int | None, batching: str = "auto", exact: bool = True,
           **options):  # fmt: skip
    """serve's app on a free loopback port; `options`: more of make_app's (prompt_lookup, draft, ...)."""
    import uvicorn

    from qwen_edge.cli.serve import make_app

    app, model_id = make_app(str(folder), parallel=parallel, max_queue=256, threads=threads, batching=batching,
                             exact=exact, **options)  # fmt: skip
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", model_id
    finally:
        srv.should_exit = True
        thread.join(timeout=60)
        sock.close()


@contextlib.contextmanager
def server_process(folder: Path, parallel: int, threads: int | None, batching: str = "auto", exact: bool = True):
    """`qwen-edge serve` as its own process on a free loopback port (clients then do not share its
    GIL, as in a real deployment); stopped with SIGTERM at the end."""
    import subprocess
    import sys
    import urllib.request

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cli = Path(sys.executable).with_name("qwen-edge")
    cmd = [str(cli), "-q", "serve", str(folder), "--port", str(port), "--parallel", str(parallel),
           "--max-queue", "256", "--batching", batching, "--exact" if exact else "--no-exact",
           *(["--threads", str(threads)] if threads else [])]  # fmt: skip
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"qwen-edge serve did not start: {' '.join(cmd)}") from None
                time.sleep(0.25)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
            model_id = json.loads(r.read())["data"][0]["id"]
        yield f"http://127.0.0.1:{port}/v1", model_id
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def prompts(tokenizer, count: int, length: int) -> list[str]:
    """`count` distinct texts of exactly `length` tokens (no two share a long prefix)."""
    import random

    out = []
    for i in range(count):
        rng = random.Random(i)
        words = [f"Request {i}:"] + [rng.choice(WORDS) for _ in range(length * 2)]
        ids = tokenizer.encode(" ".join(words))[:length]
        out.append(tokenizer.decode(ids))  # re-encoding may merge a token at the cut: within one of `length`
    return out


EXTRA = {"ignore_eos": True}  # what makes every answer --new tokens long (--extra for other servers)


def one(client, model_id: str, prompt: str, new: int) -> dict:
    start = time.perf_counter()
    first, pieces, usage = None, [], None
    stream = client.completions.create(
        model=model_id, prompt=prompt, max_tokens=new, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=EXTRA,
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].text)
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    tokens = usage.completion_tokens if usage else new  # a server without include_usage: --new was asked for
    return {"start": start, "first": first, "ttft_s": first - start, "end": end, "tokens": tokens,
            "decode_tok_s": (tokens - 1) / (end - first), "text": "".join(pieces)}  # fmt: skip


def decoding_time(results: list[dict]) -> float:
    """Seconds during which at least one request was past its first token: the union of the
    [first token, end] spans. Tokens after the first over this time is the aggregate decode
    throughput; other requests' prefills that stall the decoding ones stay inside it."""
    total, reach = 0.0, float("-inf")
    for r in sorted(results, key=lambda r: r["first"]):
        start = max(r["first"], reach)
        if r["end"] > start:
            total, reach = total + r["end"] - start, r["end"]
    return total


def level(url: str, model_id: str, texts: list[str], clients: int, per_client: int, new: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=600)
    work = [texts[c * per_client : (c + 1) * per_client] for c in range(clients)]

    def run(batch):
        return [one(client, model_id, p, new) for p in batch]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(run, work) for r in rs]
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft_s"] for r in results)
    return {
        "clients": clients, "requests": len(results), "wall_s": wall,
        "throughput_tok_s": sum(r["tokens"] for r in results) / wall,
        "decode_throughput_tok_s": sum(r["tokens"] - 1 for r in results) / decoding_time(results),
        "ttft_p50_s": statistics.median(ttfts), "ttft_p90_s": ttfts[math.ceil(0.9 * len(ttfts)) - 1],
        "per_client_decode_tok_s": statistics.median(r["decode_tok_s"] for r in results),
        "texts": [r["text"] for r in results],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batching", default="auto", choices=("auto", "runtime", "genai"))
    ap.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True,
                    help="genai batching in f32 (see qwen-edge serve --help)")  # fmt: skip
    ap.add_argument("--subprocess", action="store_true",
                    help="run `qwen-edge serve` as its own process (default: in this one, under uvicorn)")  # fmt: skip
    ap.add_argument("--check-all", action="store_true", help="the first level sends every prompt (see above)")
    ap.add_argument("--url", help="measure this running OpenAI server instead (the folder gives the tokenizer)")
    ap.add_argument("--model", help="the model id for --url")
    ap.add_argument("--extra", help="JSON merged into every request (default: ignore_eos)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.extra:
        EXTRA.clear()
        EXTRA.update(json.loads(args.extra))
    from qwen_edge.runtime.tokenizer import Tokenizer

    levels = [int(c) for c in args.clients.split(",")]
    rows = []
    for folder in args.folders:
        texts = prompts(Tokenizer(folder), max(levels) * args.requests, args.prompt_tokens)
        start = server_process if args.subprocess else server
        results = {}
        for c in levels:
            # a server of its own per level: none answers from a prefix cached by the level before
            ours = contextlib.nullcontext((args.url, args.model)) if args.url else None
            with ours or start(folder, max(levels), args.threads, args.batching, args.exact) as (url, model_id):
                level(url, model_id, ["warm up"], 1, 1, 8)
                # the same prompts at every level: the first c * requests of them (--check-all: the
                # first level sends every prompt, so each answer under load is checked against it alone)
                n = len(texts) // c if args.check_all and c == levels[0] else args.requests
                r = level(url, model_id, texts[: c * n], c, n, args.new)
            results[c] = r
            base = results[levels[0]]["texts"]
            same = all(a == b for a, b in zip(r["texts"], base, strict=False))
            name = args.url or str(folder)
            row = {"folder": name, **{k: v for k, v in r.items() if k != "texts"}, "same_as_fewer": same}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| folder | clients | requests | same as alone | throughput tok/s | x 1 client | decode tok/s | x 1 client "
          "| TTFT p50 | TTFT p90 | per-client tok/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        one_client = next(x for x in rows if x["folder"] == r["folder"] and x["clients"] == levels[0])
        cells = (Path(r["folder"]).name, r["clients"], r["requests"], r["same_as_fewer"],
                 f"{r['throughput_tok_s']:.1f}",
                 f"{r['throughput_tok_s'] / one_client['throughput_tok_s']:.2f}x",
                 f"{r['decode_throughput_tok_s']:.1f}",
                 f"{r['decode_throughput_tok_s'] / one_client['decode_throughput_tok_s']:.2f}x",
                 f"{r['ttft_p50_s']:.2f} s", f"{r['ttft_p90_s']:.2f} s",
                 f"{r['per_client_decode_tok_s']:.1f}")  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
