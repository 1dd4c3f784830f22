"""`qwen-edge bench --report DIR`: report.md with the table and three PNG plots (needs matplotlib,
the `bench` extra): latency vs prompt length per runtime, decode tokens/s and peak memory per
folder and runtime."""

from __future__ import annotations

from pathlib import Path


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
            by_new.setdefault(new, []).append((int(prompt), s["ttft_s"]))
        for new, points in by_new.items():
            points.sort()
            name = label[id(r)] + (f" · {new} new" if new else "")
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
    ax.set(xlabel="prompt tokens", ylabel="time to first token (s)", title="TTFT vs prompt length")
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
        f"{a['runs']} rounds, each a fresh process per folder and runtime, interleaved; device {a['device']}.",
        "",
        "| folder | runtime | prompt | TTFT s (p10–p90) | TPOT p50 / p90 ms | decode tok/s | prefill tok/s "
        "| load s | peak RSS MB | stable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        name = _name(r["folder"])
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['runtime']} | {r['status']}: {r['note']} | | | | | | | |")
            continue
        for n, s in r["by_prompt"].items():
            lines.append(
                f"| {name} | {r['runtime']} | {n} | {s['ttft_s']:.3f} ({s['ttft_s_p10']:.3f}–{s['ttft_s_p90']:.3f}) | "
                f"{1e3 * s['tpot_s_p50']:.1f} / {1e3 * s['tpot_s_p90']:.1f} | {s['decode_tokens_per_s']:.1f} | "
                f"{s['prefill_tokens_per_s']:.0f} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                f"{'yes' if r['stable'] else 'NO'} |"
            )
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
