"""Our runtime against the runtimes users would pick instead, on the same INT4 folders, side by side.

    .venv/bin/python benchmarks/runtime_speed.py [--shape Qwen2-0.5B] [--runs 5] [--work /tmp/rtspeed]
        [--json benchmarks/runtime_speed_0.5b_int4.json]

Folders (made once in --work from random weights at the shape + the Qwen2.5 tokenizer):
`qwen-edge quantize --weights int4 --data-free` of our fp16 OpenVINO export, and of our fp32 `ort`
ONNX export (MatMulNBits). Runtimes:
    ours-openvino   qwen_edge.runtime.Engine on the OpenVINO folder
    llm-pipeline    openvino_genai.LLMPipeline on the same folder
    ours-ort        qwen_edge.runtime.Engine on the ONNX folder
    ort-genai       onnxruntime_genai on the same folder
Each run is a fresh process per runtime (peak RSS is that process's own), runtimes interleaved
run by run; in each: load, one warm-up generation, then a --prompt-token prompt (random ids,
different every run, so no cache can help) and --new greedy tokens with EOS ignored. Reported:
medians of TTFT, decode tokens/s, peak RSS, load time; for ours also the share of each decode step
spent outside the backend call (sampling, streaming, bookkeeping). Threads: each runtime's
default (all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BIN = os.path.dirname(sys.executable)
HERE = Path(__file__).resolve().parent
RUNTIMES = {"ours-openvino": "ov", "llm-pipeline": "ov", "ours-ort": "ort", "ort-genai": "ort"}


def child(runtime: str, folder: str, prompt: int, new: int, seed: int) -> dict:
    """One measurement in this process."""
    import time

    import numpy as np

    from qwen_edge.runtime.bench import peak_rss_mb

    ids = np.random.default_rng(seed).integers(1000, 100_000, prompt).tolist()
    warm = ids[:16]
    start = time.perf_counter()
    if runtime.startswith("ours"):
        from qwen_edge.runtime import Engine

        engine = Engine.load(folder)
        load_s = time.perf_counter() - start
        engine.generate(warm, max_new_tokens=4, ignore_eos=True)
        session = engine.session()
        calls, append = [], session.cache.append

        def timed(tokens):
            t = time.perf_counter()
            out = append(tokens)
            calls.append(time.perf_counter() - t)
            return out

        session.cache.append = timed
        result = session.generate(ids, max_new_tokens=new, ignore_eos=True)  # streams internally
        s = result.stats
        decode_s = s.total_s - s.ttft_s
        backend_decode_s = sum(calls[1:])  # calls[0] is the prefill
        extra = {"overhead_share": max(0.0, (decode_s - backend_decode_s) / decode_s) if decode_s > 0 else None}
        sample = {"ttft_s": s.ttft_s, "decode_tok_s": s.decode_tokens_per_s, "tokens": result.token_ids, **extra}
    elif runtime == "llm-pipeline":
        import openvino as ov
        import openvino_genai

        pipe = openvino_genai.LLMPipeline(folder, "CPU")
        load_s = time.perf_counter() - start
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens, config.ignore_eos, config.do_sample = 4, True, False

        def run(tokens, n):
            config.max_new_tokens = n
            arr = np.array([tokens], np.int64)
            inputs = openvino_genai.TokenizedInputs(ov.Tensor(arr), ov.Tensor(np.ones_like(arr)))
            return pipe.generate(inputs, config)

        run(warm, 4)
        out = run(ids, new)
        m = out.perf_metrics
        sample = {
            "ttft_s": m.get_ttft().mean / 1e3,
            "decode_tok_s": 1e3 / m.get_tpot().mean,
            "tokens": [int(t) for t in out.tokens[0]],
        }
    elif runtime == "ort-genai":
        import onnxruntime_genai as og

        model = og.Model(folder)
        load_s = time.perf_counter() - start

        def run(tokens, n):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(tokens) + n, min_length=len(tokens) + n, do_sample=False)
            generator = og.Generator(model, params)
            t0 = time.perf_counter()
            generator.append_tokens(tokens)
            out, stamps = [], []
            while not generator.is_done():
                generator.generate_next_token()
                out.append(int(generator.get_next_tokens()[0]))
                stamps.append(time.perf_counter())
            return out, t0, stamps

        run(warm, 4)
        out, t0, stamps = run(ids, new)
        sample = {
            "ttft_s": stamps[0] - t0,
            "decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
            "tokens": out,
        }
    else:
        raise SystemExit(f"unknown runtime {runtime}")
    sample["load_s"] = load_s
    sample["peak_rss_mb"] = peak_rss_mb()  # VmHWM: this process only
    return sample


def prepare(shape: str, work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from openvino_export_vs_optimum import SHARED_TOKENIZER, write_hf_folder

    qe = f"{BIN}/qwen-edge"
    hf, folders = work / "hf", {"ov": work / "ov-int4", "ort": work / "ort-int4"}
    steps = [
        (hf, lambda: write_hf_folder(shape, hf, SHARED_TOKENIZER)),
        (work / "ov-fp16", [qe, "export", str(hf), "-o", str(work / "ov-fp16"), "--format", "openvino"]),
        (
            folders["ov"],
            [qe, "quantize", str(work / "ov-fp16"), "-o", str(folders["ov"]), "--data-free", "--no-report"],
        ),
        (work / "ort-fp32", [qe, "export", str(hf), "-o", str(work / "ort-fp32"), "--graph", "ort"]),
        (folders["ort"], [qe, "quantize", str(work / "ort-fp32"), "-o", str(folders["ort"]), "--no-report"]),
    ]
    work.mkdir(parents=True, exist_ok=True)
    for out, step in steps:
        if not out.exists():
            print(f"making {out}", flush=True)
            step() if callable(step) else subprocess.run(step, check=True)
    return folders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="Qwen2-0.5B")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--work", type=Path, default=Path("/tmp/rtspeed"))
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--json")
    p.add_argument("--child", nargs=4, metavar=("RUNTIME", "FOLDER", "SEED", "UNUSED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        runtime, folder, seed, _ = args.child
        print(json.dumps(child(runtime, folder, args.prompt, args.new, int(seed))))
        return

    folders = prepare(args.shape, args.work)
    runtimes = args.runtimes.split(",")
    samples = {r: [] for r in runtimes}
    for run in range(args.runs):
        for runtime in runtimes:
            folder = folders[RUNTIMES[runtime]]
            cmd = [sys.executable, __file__, "--prompt", str(args.prompt), "--new", str(args.new)]
            cmd += ["--child", runtime, str(folder), str(run), "-"]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            sample = json.loads(out.stdout.strip().splitlines()[-1])
            samples[runtime].append(sample)
            print(
                f"run {run + 1} {runtime:14s} TTFT {sample['ttft_s']:.3f} s  decode {sample['decode_tok_s']:.1f} tok/s"
                f"  RSS {sample['peak_rss_mb']:.0f} MB  load {sample['load_s']:.2f} s"
                + (
                    f"  overhead {100 * sample['overhead_share']:.1f}%"
                    if sample.get("overhead_share") is not None
                    else ""
                ),
                flush=True,
            )
    medians = {}
    for runtime, s in samples.items():
        keys = ("ttft_s", "decode_tok_s", "peak_rss_mb", "load_s", "overhead_share")
        medians[runtime] = {k: statistics.median(x[k] for x in s) for k in keys if s and s[0].get(k) is not None}
        # the same greedy tokens in every run of a runtime would mean the prompts did not vary
        medians[runtime]["distinct_outputs"] = len({tuple(x["tokens"]) for x in s})
    print("\nmedians")
    for runtime, m in medians.items():
        print(f"{runtime:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    for ours, theirs in (("ours-openvino", "llm-pipeline"), ("ours-ort", "ort-genai")):
        if ours in medians and theirs in medians:
            a, b = medians[ours], medians[theirs]
            print(
                f"{ours} / {theirs}: decode {a['decode_tok_s'] / b['decode_tok_s']:.2f}x, "
                f"TTFT {a['ttft_s'] / b['ttft_s']:.2f}x, peak RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "medians": medians, "samples": samples}, indent=2
            )
        )


if __name__ == "__main__":
    main()
