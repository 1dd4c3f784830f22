"""openvino_genai's ContinuousBatchingPipeline on our OpenVINO folder, the same load as
benchmarks/server_load.py (distinct 128-token prompts, 64 new tokens, greedy, EOS ignored): one
request, then 16 submitted at once; tokens per second of wall time. What `qwen-edge serve` would
gain on OpenVINO folders by driving this pipeline instead of interleaving batch-1 requests.

    .venv/bin/python benchmarks/ov_continuous_batching.py /tmp/real-ov4 --requests 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8, help="max_num_seqs: sequences decoded together")
    args = ap.parse_args()
    import openvino_genai as ov_genai
    from server_load import prompts  # benchmarks/ is run as scripts

    from qwen_edge.runtime.tokenizer import Tokenizer

    texts = prompts(Tokenizer(args.folder), args.requests, args.prompt_tokens)
    sched = ov_genai.SchedulerConfig()
    sched.cache_size = 2  # GB of KV blocks
    sched.max_num_seqs = args.parallel
    sched.enable_prefix_caching = False
    pipe = ov_genai.ContinuousBatchingPipeline(str(args.folder), sched, "CPU", {"INFERENCE_NUM_THREADS": args.threads})
    config = ov_genai.GenerationConfig()
    config.max_new_tokens, config.ignore_eos, config.do_sample = args.new, True, False
    pipe.generate(["warm up"], [config])
    rows = []
    for n in (1, args.requests):
        start = time.perf_counter()
        pipe.generate(texts[:n], [config] * n)
        wall = time.perf_counter() - start
        tokens = n * args.new  # ignore_eos: every request makes exactly --new tokens
        rows.append({"requests": n, "wall_s": wall, "throughput_tok_s": tokens / wall})
        print(json.dumps(rows[-1]), flush=True)
    print(f"x one request: {rows[1]['throughput_tok_s'] / rows[0]['throughput_tok_s']:.2f}")
    own_loop(pipe, config, texts, args.parallel)


def own_loop(pipe, config, texts, parallel: int) -> None:
    """The same requests through add_request / step / read (what the server does), with a Python
    thread ticking every millisecond beside it: if step() released the GIL it would tick ~1000/s."""
    import threading

    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    ticks, done = [0], threading.Event()

    def tick():
        while not done.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    threading.Thread(target=tick, daemon=True).start()
    tokenizer = pipe.get_tokenizer()
    pending = [tokenizer.encode(t).input_ids.data[0].tolist() for t in texts]
    active, made, rid, start = {}, 0, 0, time.perf_counter()
    while pending or active:
        while pending and len(active) < parallel:
            active[rid] = pipe.add_request(rid, ov.Tensor(np.array([pending.pop(0)], np.int64)), config)
            rid += 1
        pipe.step()
        for key, handle in list(active.items()):
            while handle.can_read():
                made += sum(len(o.generated_ids) for o in handle.read().values())
            if handle.get_status() != ov_genai.GenerationStatus.RUNNING:
                del active[key]
    wall = time.perf_counter() - start
    done.set()
    print(json.dumps({"own_loop_tok_s": made / wall, "ticks_per_s": ticks[0] / wall}))


if __name__ == "__main__":
    main()
