"""What `qwen-edge bench` prints and writes: one flat record per folder, runtime and prompt length
(`--format table|md|csv|json|jsonl`), and with --report DIR report.md with three PNG plots (needs
matplotlib, the `bench` extra): latency vs prompt length per runtime, decode tokens/s and peak
memory per folder and runtime. Latencies are in milliseconds, load in seconds."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

FORMATS = ("table", "md", "csv", "json", "jsonl")
COLUMNS = {  # record key -> table heading
    "folder": "folder",
    "runtime": "runtime",
    "prompt": "prompt",
    "ttft_ms": "TTFT ms",
    "tpot_ms_p50": "TPOT p50 ms",
    "tpot_ms_p90": "TPOT p90 ms",
    "decode_tok_s": "decode tok/s",
    "prefill_tok_s": "prefill tok/s",
    "load_s": "load s",
    "peak_rss_mb": "peak RSS MB",
    "stable": "stable",
}


def records(result: dict) -> list[dict]:
    """One flat record per (folder, runtime, prompt length); a failed case is one record with its
    status and note. Comparison rows carry ours' ratio on the same folder and length."""
    out = []
    for r in result["rows"]:
        base = {"folder": r["folder"], "runtime": r["runtime"], "status": r["status"]}
        if r["status"] != "ok":
            out.append({**base, "note": r["note"]})
            continue
        for prompt, s in r["by_prompt"].items():
            rec = {
                **base,
                "prompt": prompt,
                "ttft_ms": round(1e3 * s["ttft_s"], 1),
                "ttft_ms_p10": round(1e3 * s["ttft_s_p10"], 1),
                "ttft_ms_p90": round(1e3 * s["ttft_s_p90"], 1),
                "tpot_ms_p50": round(1e3 * s["tpot_s_p50"], 2),
                "tpot_ms_p90": round(1e3 * s["tpot_s_p90"], 2),
                "decode_tok_s": round(s["decode_tokens_per_s"], 1),
                "prefill_tok_s": round(s["prefill_tokens_per_s"], 0),
                "load_s": round(r["load_s"], 2),
                "peak_rss_mb": round(r["peak_rss_mb"]),
                "stable": r["stable"],
            }
            ratio = r.get("ours_vs_this", {}).get(prompt)
            if ratio:
                rec.update(ours_decode_x=round(ratio["decode"], 2), ours_ttft_x=round(ratio["ttft"], 2))
            out.append(rec)
    return out


def render(result: dict, fmt: str) -> str:
    """The records in one of FORMATS (table: aligned for a terminal)."""
    recs = records(result)
    if fmt == "json":
        return json.dumps(recs, indent=2)
    if fmt == "jsonl":
        return "\n".join(json.dumps(r) for r in recs)
    if fmt == "csv":
        keys = list(dict.fromkeys(k for r in recs for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(recs)
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(k, r) for k in COLUMNS] for r in recs if r["status"] == "ok"]
    failed = [f"{_name(r['folder'])} {r['runtime']}: {r['status']}: {r['note']}" for r in recs if r["status"] != "ok"]
    if fmt == "md":
        lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells] + [f"\n{f}" for f in failed])
    rows = [list(COLUMNS.values()), *cells]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    # names left-aligned, numbers right-aligned
    lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]  # fmt: skip
    return "\n".join(lines + failed)


def _cell(key: str, rec: dict) -> str:
    v = rec[key]
    if key == "folder":
        return _name(v)
    if key == "stable":
        return "yes" if v else "NO"
    if key in ("ttft_ms", "decode_tok_s"):
        return f"{v:.1f}"
    if key in ("prefill_tok_s", "peak_rss_mb"):
        return f"{v:.0f}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_report(result: dict, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("the report needs matplotlib: pip install 'qwen-edge[bench]'") from None
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    label = {id(r): f"{_name(r['folder'])} · {r['runtime']}" for r in rows}
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:  # keys are "P", or "P+N" for a sweep of generation lengths: one line per N
        by_new: dict[str, list] = {}
        for key, s in r["by_prompt"].items():
            prompt, _, new = str(key).partition("+")
            by_new.setdefault(new, []).append((int(prompt), 1e3 * s["ttft_s"]))
        for new, points in by_new.items():
            points.sort()
            name = label[id(r)] + (f" · {new} new" if new else "")
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
    lengths = sorted({int(str(k).partition("+")[0]) for r in rows for k in r["by_prompt"]})
    ax.set_xticks(lengths, [str(n) for n in lengths])  # the measured lengths, never fractional ticks
    if len(lengths) == 1:
        ax.set_xlim(lengths[0] * 0.5, lengths[0] * 1.5)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="prompt tokens", ylabel="time to first token (ms)", title="TTFT vs prompt length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "ttft_vs_prompt.png", plt))

    for name, key, unit in (("decode_tokens_per_s", "decode", "tokens/s"), ("peak_rss", "memory", "MB")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        if key == "decode":
            values = [_median([s["decode_tokens_per_s"] for s in r["by_prompt"].values()]) for r in rows]
            ax.set(ylabel=f"decode {unit} (median over prompt lengths)", title="decode speed per folder and runtime")
        else:
            values = [r["peak_rss_mb"] for r in rows]
            ax.set(ylabel=f"peak RSS ({unit})", title="memory per folder and runtime")
        ax.bar(range(len(rows)), values, color="#4a7ebb")
        ax.set_xticks(range(len(rows)), [label[id(r)] for r in rows], rotation=20, ha="right", fontsize=8)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1f}" if key == "decode" else f"{v:.0f}", (i, v), ha="center", va="bottom", fontsize=8)
        written.append(_save(fig, out / f"{name}.png", plt))

    (out / "report.md").write_text(_markdown(result, [p.name for p in written]))
    return [*written, out / "report.md"]


def _name(folder: str) -> str:
    """The folder's last two path parts: enough to tell shapes apart (Qwen2-0.5B/ov-int4)."""
    return "/".join(Path(folder).parts[-2:])


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _median(values):
    import statistics

    return statistics.median(values)


def _markdown(result: dict, images: list[str]) -> str:
    m, a = result["machine"], result["args"]
    lines = [
        "# qwen-edge bench",
        "",
        f"Machine: {m['cpu'] or m['platform']}, {m['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        f"Prompt lengths {a['prompt_lengths']}, {a['new_tokens']} new tokens (greedy, EOS ignored), "
        f"{a['runs']} round{'s' if a['runs'] != 1 else ''}, each a fresh process per folder and runtime, "
        f"interleaved; device {a['device']}.",
        "",
        render(result, "md"),
    ]
    if "bandwidth" in result:
        b = result["bandwidth"]
        lines += ["", f"Memory read bandwidth: {b['read_gb_s']:.1f} GB/s."]
        for folder, c in b["ceilings"].items():
            lines.append(
                f"- {_name(folder)}: {c['bytes_per_token'] / 1e6:.0f} MB read per decode step (of "
                f"{c['weight_bytes'] / 1e6:.0f} MB of weights) -> decode ceiling "
                f"{c['decode_tokens_per_s']:.1f} tokens/s"
            )
    lines += ["", *[f"![{img}]({img})" for img in images], ""]
    return "\n".join(lines)
