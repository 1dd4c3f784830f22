"""Measure latency and memory of export folders: ours, and with --compare the runtimes users would pick.

Load time, TTFT, per-token decode latency (TPOT p50 / p90), decode and prefill tokens/s and the
peak RSS of the measuring process itself, over a sweep of prompt lengths. Each round runs every
(folder, runtime) in a fresh process, interleaved; prompts are cut from real text at new offsets
every round. --bandwidth adds this machine's memory bandwidth and the decode ceiling it implies.
"""

from __future__ import annotations

import sys


def configure_parser(p) -> None:
    p.add_argument("folders", nargs="+", help="export folders (ONNX or OpenVINO)")
    p.add_argument(
        "--prompt-lengths", default="32,128,512,1024", help="comma-separated (kept within each model's limits)"
    )
    p.add_argument("--new-tokens", default="32", help="generation length, or a comma-separated sweep")
    p.add_argument("--runs", type=int, default=3, help="rounds (each a fresh process per folder and runtime)")
    p.add_argument("--compare", action="store_true", help="also the ecosystem runtimes installed here")
    p.add_argument(
        "--runtimes",
        help="only these (comma-separated: ours, ours-lookup, ours-draft, llm-pipeline, optimum-intel, ort-genai, "
        "optimum-onnx, llama.cpp)",
    )
    p.add_argument(
        "--prompt-lookup", action="store_true",
        help="also ours with prompt-lookup speculative decoding (runtime ours-lookup; same greedy tokens)",
    )  # fmt: skip
    p.add_argument(
        "--draft", metavar="FOLDER",
        help="also ours with this draft model's guesses checked by each folder's model (runtime ours-draft)",
    )  # fmt: skip
    p.add_argument("--draft-confidence", type=float, default=0.5, help="see qwen-edge generate --help")
    p.add_argument("--bandwidth", action="store_true", help="measure memory bandwidth and the decode ceiling")
    p.add_argument("--profile", action="store_true", help="top operators by time (ours)")
    p.add_argument("--device", default="CPU")
    p.add_argument("--text", help="text the prompts are cut from (default: a built-in sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--format", dest="fmt", default="table", choices=("table", "md", "csv", "json", "jsonl"),
        help="stdout: an aligned table (default), Markdown, or one record per folder, runtime and prompt length",
    )  # fmt: skip
    p.add_argument("--json", dest="json_path", help="write every raw sample here")
    p.add_argument("--report", help="write a Markdown report with PNG plots into this folder")


def run(
    folders: list[str],
    prompt_lengths: str = "32,128,512,1024",
    new_tokens: str | int = "32",
    runs: int = 3,
    compare: bool = False,
    runtimes: str | None = None,
    bandwidth: bool = False,
    profile: bool = False,
    device: str = "CPU",
    text: str | None = None,
    seed: int = 0,
    json_path: str | None = None,
    report: str | None = None,
    fmt: str = "table",
    prompt_lookup: bool = False,
    draft: str | None = None,
    draft_confidence: float = 0.5,
) -> dict:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from qwen_edge.bench import measure as bench
    from qwen_edge.runtime.engine import EngineError
    from qwen_edge.runtime.manifest import ManifestError, read

    try:
        lengths = sorted({int(x) for x in str(prompt_lengths).split(",") if x.strip()})
        news = sorted({int(x) for x in str(new_tokens).split(",") if x.strip()})
    except ValueError:
        raise EngineError("--prompt-lengths and --new-tokens take comma-separated integers (32,128)") from None
    if not lengths or not news or min(lengths) < 1 or min(news) < 2 or runs < 1:
        raise EngineError("--prompt-lengths must be positive, --new-tokens at least 2, --runs at least 1")
    new_tokens = max(news)
    only = {r.strip() for r in runtimes.split(",")} if runtimes else None
    plans, ggufs = [], set()
    for folder in folders:
        try:
            manifest = read(folder)
        except ManifestError as e:
            raise EngineError(str(e)) from None
        runtimes = list(bench.RUNTIMES_FOR[manifest.format] if compare else ("ours",))
        if prompt_lookup and manifest.graph != "static":  # guesses are checked in one forward: dynamic graphs
            runtimes.insert(1, "ours-lookup")
        if draft and manifest.graph != "static":
            runtimes.insert(1, "ours-draft")
        if manifest.graph not in ("ort", "stateful"):  # genai runtimes need these layouts
            runtimes = [r for r in runtimes if r not in ("ort-genai", "llm-pipeline")]
        if only:
            runtimes = [r for r in runtimes if r in only]
        if "llama.cpp" in runtimes:  # it runs the source GGUF: once per file, not once per folder made from it
            gguf = bench.source_gguf(folder)
            runtimes = [r for r in runtimes if r != "llama.cpp" or gguf not in ggufs]
            ggufs.add(gguf)
        for runtime in runtimes:
            limit = manifest.max_context - new_tokens  # the same limit in every runtime
            fits = [n for n in lengths if n <= limit]
            if not fits:
                raise EngineError(f"{folder}: no prompt length fits {runtime}'s {limit + new_tokens} positions")
            plans.append((folder, runtime, fits))
    outcomes = []
    steps = tqdm(total=runs * len(plans), desc="bench", unit="case", disable=None)
    for round_ in range(runs):
        for folder, runtime, fits in plans:
            steps.set_postfix_str(f"{Path(folder).name} {runtime}")
            case = bench.Case(runtime, folder, fits, news, 1, seed + round_, device, text, profile and round_ == 0,
                              draft, draft_confidence)  # fmt: skip
            outcomes.append(bench.measure_in_subprocess(case))
            steps.update()
    steps.close()
    result = _collect(plans, outcomes)
    result["machine"] = _machine()
    result["args"] = {"prompt_lengths": lengths, "new_tokens": news, "runs": runs, "device": device}
    if bandwidth:
        gbs = bench.memory_bandwidth_gbs()
        result["bandwidth"] = {"read_gb_s": gbs, "ceilings": {}}
        for folder in folders:
            size, per_token = bench.bytes_per_token(folder)
            result["bandwidth"]["ceilings"][folder] = {
                "weight_bytes": size,
                "bytes_per_token": per_token,
                "decode_tokens_per_s": gbs * 1e9 / per_token,
            }
    _print(result, fmt)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    if report:
        from qwen_edge.bench.report import write_report

        write_report(result, Path(report))
        print(f"report: {Path(report) / 'report.md'}")
    return result


def _collect(plans, outcomes) -> dict:
    import statistics

    from qwen_edge.bench import measure as bench

    rows = []
    for folder, runtime, _ in plans:
        mine = [o for o in outcomes if o.folder == folder and o.runtime == runtime]
        ok = [o for o in mine if o.status == "ok"]
        row = {"folder": folder, "runtime": runtime, "status": ok and "ok" or mine[0].status, "note": mine[0].note}
        if ok:
            row.update(
                load_s=statistics.median(o.load_s for o in ok),
                peak_rss_mb=statistics.median(o.peak_rss_mb for o in ok),
                stable=all(o.stable for o in ok),
                by_prompt={str(k): v for k, v in bench.summarize([s for o in ok for s in o.samples]).items()},
                profile=next((o.profile for o in ok if o.profile), []),
            )
        rows.append(row)
    for row in rows:  # ratios against ours on the same folder, same prompt length
        ours = next((r for r in rows if r["folder"] == row["folder"] and r["runtime"] == "ours"), None)
        if row["runtime"] != "ours" and row["status"] == "ok" and ours and ours["status"] == "ok":
            row["ours_vs_this"] = {
                k: {
                    "decode": ours["by_prompt"][k]["decode_tokens_per_s"] / v["decode_tokens_per_s"],
                    "ttft": ours["by_prompt"][k]["ttft_s"] / v["ttft_s"],
                }
                for k, v in row["by_prompt"].items()
                if k in ours["by_prompt"]
            }
    return {"rows": rows, "cases": [o.to_dict() for o in outcomes]}


def _machine() -> dict:
    import os
    import platform
    from importlib import metadata

    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    versions = {}
    for pkg in ("qwen-edge", "openvino", "onnxruntime", "openvino-genai", "onnxruntime-genai"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "versions": versions}


def _print(result: dict, fmt: str = "table") -> None:
    from qwen_edge.bench.report import render

    out = sys.stdout
    if fmt not in ("table", "md"):  # machine-readable: the records alone
        print(render(result, fmt), file=out)
        return
    m = result["machine"]
    print(f"{m['cpu'] or m['platform']}, {m['cores']} cores", file=out)
    print(render(result, fmt), file=out)
    for row in result["rows"]:
        name = "/".join(row["folder"].rstrip("/").split("/")[-2:])
        for length, r in row.get("ours_vs_this", {}).items():
            print(f"ours / {row['runtime']} on {name}, prompt {length}: decode {r['decode']:.2f}x, "
                  f"TTFT {r['ttft']:.2f}x", file=out)  # fmt: skip
        for op in row.get("profile", [])[:5]:
            print(f"{name} {row['runtime']}: top op {op['op']:28} {100 * op['share']:5.1f}%", file=out)
    if "bandwidth" in result:
        b = result["bandwidth"]
        print(f"memory read bandwidth {b['read_gb_s']:.1f} GB/s", file=out)
        for folder, c in b["ceilings"].items():
            best = max(
                (
                    s["decode_tokens_per_s"]
                    for r in result["rows"]
                    if r["folder"] == folder and r["status"] == "ok"
                    for s in r["by_prompt"].values()
                ),
                default=0.0,
            )
            print(
                f"  {folder}: {c['bytes_per_token'] / 1e6:.0f} MB read per token -> ceiling "
                f"{c['decode_tokens_per_s']:.1f} tok/s; best measured {best:.1f} "
                f"({100 * best / c['decode_tokens_per_s']:.0f}% of it)",
                file=out,
            )
