"""qwen-edge bench: the statistics on a fake runtime with known timings, the JSON it writes, absent
runtimes, whose memory is measured, determinism, and the report."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qwen_edge.bench import measure as bench

from .cache_env import cache_at


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def fake_runner(prefill_s_per_token=0.001, decode_s=(0.010, 0.010, 0.010, 0.050), drift=False):
    """A runtime whose timings are known: prefill costs L x prefill_s_per_token, decode steps cycle
    through `decode_s`. With `drift` its output changes from call to call."""
    clock, calls = FakeClock(), []

    def load(case):
        def run(ids, n):
            calls.append(len(ids))
            start = clock.now
            clock.now += prefill_s_per_token * len(ids)
            stamps = [clock.now]
            for i in range(n - 1):
                clock.now += decode_s[i % len(decode_s)]
                stamps.append(clock.now)
            out = [(t + (len(calls) if drift else 0)) % 50 for t in ids[:n]]
            return out, start, stamps

        return run, lambda text: [ord(c) for c in text], {}

    return load, calls


def test_statistics_from_known_timings():
    load, calls = fake_runner()
    case = bench.Case("fake", "folder", [10, 40], new_tokens=5, reps=3, text=None)
    out = bench.measure(case, runner=load)
    assert out.status == "ok" and out.stable is True
    assert calls == [16, 10, 10, 10, 40, 40, 40, 10]  # warm-up, 3 x 10, 3 x 40, the re-run of the first
    summary = bench.summarize(out.samples)
    s10, s40 = summary[10], summary[40]
    assert s10["runs"] == 3 and s10["ttft_s"] == pytest.approx(0.010) and s40["ttft_s"] == pytest.approx(0.040)
    assert s10["prefill_tokens_per_s"] == pytest.approx(1000.0)
    # 4 decode steps per run: 10, 10, 10, 50 ms -> p50 10 ms, p90 between 10 and 50 as numpy interpolates
    assert s10["tpot_s_p50"] == pytest.approx(0.010)
    assert s10["tpot_s_p90"] == pytest.approx(np.percentile([0.01] * 9 + [0.05] * 3, 90))
    assert s10["decode_tokens_per_s"] == pytest.approx(4 / 0.080)
    assert all(len(s["tpot_s"]) == 4 and s["new_tokens"] == 5 for s in out.samples)


def test_prompts_vary_per_repetition_and_are_real_text_windows():
    tokens = list(range(1000))
    windows = bench.prompts(tokens, 32, 4, seed=0)
    assert len({tuple(w) for w in windows}) == 4 and all(len(w) == 32 for w in windows)
    assert all(w == list(range(w[0], w[0] + 32)) for w in windows)  # contiguous windows of the text
    assert bench.prompts(tokens, 32, 4, seed=1) != windows


def test_a_runtime_whose_output_drifts_is_flagged_unstable():
    load, _ = fake_runner(drift=True)
    out = bench.measure(bench.Case("fake", "f", [10], new_tokens=4, reps=2), runner=load)
    assert out.stable is False


def test_absent_runtimes_are_reported_not_raised():
    def missing(case):
        raise ImportError("no module", name="onnxruntime_genai")

    out = bench.measure(bench.Case("ort-genai", "f", [8]), runner=missing)
    assert out.status == "absent" and "not installed (onnxruntime_genai)" in out.note


@pytest.fixture(scope="module")
def ort_folder(tmp_path_factory):

    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.shapes import random_model

    from .gguf_writer import write_gguf

    tmp = tmp_path_factory.mktemp("bench")
    with cache_at(str(tmp / "cache")):
        gguf = write_gguf(random_model("tiny-untied", seed=4, std=0.1), tmp / "m.gguf")
        export_onnx(str(gguf), tmp / "ort")
        return tmp / "ort"


def test_cli_json_schema_compare_and_report(ort_folder, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen_edge.cli.main",
            "bench",
            str(ort_folder),
            "--prompt-lengths",
            "8,16",
            "--new-tokens",
            "4",
            "--runs",
            "2",
            "--compare",
            "--bandwidth",
            "--profile",
            "--json",
            str(tmp_path / "b.json"),
            "--report",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert set(result) >= {"rows", "cases", "machine", "args", "bandwidth"}
    rows = {r["runtime"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "ort-genai", "optimum-onnx", "llama.cpp"}
    # llama.cpp runs the GGUF the folder came from, when llama-cpp-python is installed (make install does not)
    assert rows["llama.cpp"]["status"] == "ok" or "not installed (llama_cpp)" in rows["llama.cpp"]["note"]
    ours = rows["ours"]
    assert ours["status"] == "ok" and ours["stable"] is True and set(ours["by_prompt"]) == {"8", "16"}
    assert set(ours["by_prompt"]["8"]) >= {
        "ttft_s",
        "tpot_s_p50",
        "tpot_s_p90",
        "decode_tokens_per_s",
        "prefill_tokens_per_s",
        "runs",
    }
    assert ours["by_prompt"]["8"]["runs"] == 2 and ours["load_s"] > 0 and ours["peak_rss_mb"] > 0
    assert rows["ort-genai"]["status"] == "ok" and set(rows["ort-genai"]["ours_vs_this"]["8"]) == {"decode", "ttft"}
    # optimum-onnx cannot be installed beside this stack: skipped with a note, not a failure
    assert rows["optimum-onnx"]["status"] == "absent" and "not installed" in rows["optimum-onnx"]["note"]
    assert len(result["cases"]) == 2 * 4 and all(len(c["samples"]) == 2 for c in result["cases"] if c["status"] == "ok")
    # rounds interleaved (every runtime once, then again), each case in a process of its own
    order = [c["runtime"] for c in result["cases"]]
    assert order[:4] == order[4:] and len(set(order[:4])) == 4
    pids = [c["pid"] for c in result["cases"] if c["status"] == "ok"]
    assert len(pids) == len(set(pids)) >= 4 and os.getpid() not in pids
    # --profile: ours' top operators, as shares of the measured time
    profile = ours["profile"]
    assert profile and all(0 < op["share"] <= 1 for op in profile) and sum(op["share"] for op in profile) <= 1 + 1e-6
    assert "top op" in out.stdout
    ceiling = result["bandwidth"]["ceilings"][str(ort_folder)]
    assert result["bandwidth"]["read_gb_s"] > 0.1
    # against the graph itself: every initializer's bytes, and a decode step reads one row of the
    # (untied) embedding table instead of all of it
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(ort_folder / "model.onnx")).graph
    sizes = {t.name: numpy_helper.to_array(t).nbytes for t in graph.initializer}
    table = max(sizes.values())  # tiny-untied's largest tensor: the 512 x 64 embedding (lm_head is its twin)
    assert abs(ceiling["weight_bytes"] - sum(sizes.values())) <= 0.02 * sum(sizes.values())
    assert ceiling["bytes_per_token"] == ceiling["weight_bytes"] - table + table // 512
    for name in ("ttft_vs_prompt.png", "decode_tokens_per_s.png", "peak_rss.png"):
        png = (tmp_path / "report" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "![ttft_vs_prompt.png]" in (tmp_path / "report" / "report.md").read_text()
    assert "ours / ort-genai" in out.stdout


def test_peak_rss_is_the_measuring_process_own(ort_folder):
    """The parent holds 600 MB; the case's process reports its own peak, far below that."""
    ballast = np.ones(600 * (1 << 20) // 8)
    ballast[::4096] = 2.0  # touch every page
    parent = bench.peak_rss_mb()
    out = bench.measure_in_subprocess(bench.Case("ours", str(ort_folder), [8], new_tokens=3, reps=1))
    assert out.status == "ok" and 0 < out.peak_rss_mb < parent - 400
    del ballast


def test_an_absent_device_is_reported(ort_folder):
    out = bench.measure(bench.Case("ours", str(ort_folder), [8], device="QNN"))
    assert out.status == "absent" and "QNN" in out.note


def test_a_sweep_of_generation_lengths_is_summarized_per_pair():
    load, _ = fake_runner()
    out = bench.measure(bench.Case("fake", "f", [10, 20], new_tokens=[3, 5], reps=2), runner=load)
    summary = bench.summarize(out.samples)
    assert set(summary) == {"10+3", "10+5", "20+3", "20+5"}
    assert summary["20+5"]["runs"] == 2 and summary["10+3"]["tpot_s_p50"] == pytest.approx(0.010)


def _result(runs=1):
    sample = {"ttft_s": 0.0004, "ttft_s_p10": 0.0003, "ttft_s_p90": 0.0006, "tpot_s_p50": 0.0021, "tpot_s_p90": 0.0025,
              "decode_tokens_per_s": 476.2, "prefill_tokens_per_s": 20000.0, "runs": runs}  # fmt: skip
    ok = {"folder": "/x/Qwen2-0.5B/ort", "runtime": "ours", "status": "ok", "note": "", "load_s": 0.5,
          "peak_rss_mb": 321.4, "stable": True, "by_prompt": {"32": sample}}  # fmt: skip
    other = {**ok, "runtime": "ort-genai", "ours_vs_this": {"32": {"decode": 1.8, "ttft": 0.9}}}
    absent = {"folder": "/x/Qwen2-0.5B/ort", "runtime": "optimum-onnx", "status": "absent", "note": "not installed"}
    machine = {"cpu": "cpu", "platform": "linux", "cores": 2, "versions": {}}
    args = {"prompt_lengths": [32], "new_tokens": [8], "runs": runs, "device": "CPU"}
    return {"rows": [ok, other, absent], "machine": machine, "args": args}


def test_every_output_format_in_milliseconds():
    import csv
    import io

    from qwen_edge.bench.report import render

    result = _result()
    rows = list(csv.DictReader(io.StringIO(render(result, "csv"))))
    assert [r["runtime"] for r in rows] == ["ours", "ort-genai", "optimum-onnx"]
    assert rows[0]["ttft_ms"] == "0.4" and rows[0]["tpot_ms_p50"] == "2.1" and rows[1]["ours_decode_x"] == "1.8"
    assert rows[2]["status"] == "absent" and rows[2]["note"] == "not installed"
    assert json.loads(render(result, "json")) == [json.loads(line) for line in render(result, "jsonl").splitlines()]
    table = render(result, "table").splitlines()
    assert table[0].split()[:4] == ["folder", "runtime", "prompt", "TTFT"] and "0.4" in table[1].split()
    assert len({len(line) for line in table[:3]}) == 1  # aligned columns
    assert table[-1] == "Qwen2-0.5B/ort optimum-onnx: absent: not installed"
    md = render(result, "md").splitlines()
    assert md[0].startswith("| folder | runtime | prompt | TTFT ms |") and md[2].startswith("| Qwen2-0.5B/ort | ours")


def test_report_of_one_round_and_one_length(tmp_path):
    from qwen_edge.bench.report import write_report

    write_report(_result(runs=1), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "1 round, each" in md and "| TTFT ms |" in md


def test_prompt_lookup_is_measured_beside_plain_decoding_with_the_same_tokens(ort_folder, capsys):
    from qwen_edge.cli.bench import run

    result = run([str(ort_folder)], prompt_lengths="8,16", new_tokens="12", runs=1, prompt_lookup=True,
                 text=None)  # fmt: skip
    rows = {r["runtime"]: r for r in result["rows"]}
    assert set(rows) == {"ours", "ours-lookup"} and all(r["status"] == "ok" for r in rows.values())
    cases = {c["runtime"]: c for c in result["cases"]}
    plain, lookup = cases["ours"]["samples"], cases["ours-lookup"]["samples"]
    # the same prompts, the same greedy tokens: speculation changes the speed, never the text
    assert [s["output_sha"] for s in lookup] == [s["output_sha"] for s in plain] and len(plain) == 2
    assert all(s["new_tokens"] == 12 and len(s["tpot_s"]) == 11 for s in lookup)
    assert all(0 <= s["accepted"] <= s["drafted"] for s in lookup)
    assert "ours / ours-lookup" in capsys.readouterr().out


def test_a_draft_model_is_measured_beside_plain_decoding_with_the_same_tokens(ort_folder, capsys):
    from qwen_edge.cli.bench import run

    # the folder as its own draft: the same weights, so guesses are (nearly) always kept
    result = run([str(ort_folder)], prompt_lengths="8", new_tokens="12", runs=1, draft=str(ort_folder), text=None,
                 draft_confidence=0.0)  # a tiny random model is never sure  # fmt: skip
    cases = {c["runtime"]: c for c in result["cases"]}
    assert set(cases) == {"ours", "ours-draft"} and all(c["status"] == "ok" for c in cases.values())
    plain, draft = cases["ours"]["samples"], cases["ours-draft"]["samples"]
    assert [s["output_sha"] for s in draft] == [s["output_sha"] for s in plain]
    assert all(s["drafted"] > 0 and s["accepted"] >= 0.9 * s["drafted"] for s in draft)
    assert "ours / ours-draft" in capsys.readouterr().out
