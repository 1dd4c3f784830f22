"""The desktop app from source on a real folder: launch to a ready window, how long the window
goes unanswered while replies stream, and turn 2's TTFT against turn 1's (the KV cache kept).

    .venv/bin/python benchmarks/desktop_app.py FOLDER [--launches 5] [--turns 3] [--new 256] \
        [--json benchmarks/desktop_app_0.5b_int4.json]

Launch: `python -m qwen_edge.desktop_demo FOLDER` in a fresh process, timed to its "ready:" log
line (model loaded, window shown and taking a message) and its "warm:" line (the warm-up token
done); the first launch is reported apart. Window gaps:
a 10 ms timer on the window's thread while --turns chat turns of --new tokens stream (greedy,
ignoring nothing: a turn may end early at EOS); reported: worst gap, p99, and the tick count.
Runs under Xvfb (started here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from qwen_edge.desktop_demo import virtual_screen

PROMPTS = [
    "Write a Python function that checks whether a number is prime, with a docstring and tests.",
    "Now rewrite it to use the Sieve of Eratosthenes for many numbers at once.",
    "Explain the difference between the two versions in a short list.",
]


def launch(folder: str, env: dict) -> tuple[float, float]:
    """Seconds to the "ready:" log line (the window takes a message) and to "warm:" (warm-up done)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "qwen_edge.desktop_demo", folder], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        ready = None
        for line in proc.stderr:
            if "ready:" in line:
                ready = time.perf_counter() - start
            if "warm:" in line:
                return ready, time.perf_counter() - start
        raise RuntimeError("the app exited before it was ready")
    finally:
        proc.terminate()
        proc.wait(20)


def window_turns(folder: str, turns: int, new: int, settings: Path) -> dict:
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from qwen_edge.desktop_demo.window import ChatWindow

    app = QApplication.instance() or QApplication(["bench"])
    window = ChatWindow(folder, "CPU", settings=QSettings(str(settings), QSettings.IniFormat))
    window.show()

    def wait(condition):
        while not condition():
            app.processEvents()
            time.sleep(0.002)

    wait(lambda: window.ready)
    window.temperature.setValue(0.0)
    window.max_tokens.setValue(new)
    gaps, last = [], [None]

    def tick():
        now = time.perf_counter()
        if last[0] is not None:
            gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    results, whole = [], []
    for prompt in PROMPTS[:turns]:
        window.prompt.setPlainText(prompt)
        last[0] = None
        timer.start()
        window.send_or_stop()
        wait(lambda: not window.generating)
        timer.stop()
        r = window.worker.chat.last
        whole.append(r.prompt_token_ids)
        results.append({"prompt_tokens": len(r.prompt_token_ids), "computed_tokens": r.stats.prompt_tokens,
                        "new_tokens": r.stats.new_tokens, "ttft_s": round(r.stats.ttft_s, 3),
                        "tokens_per_s": round(r.stats.decode_tokens_per_s, 1), "chars": len(r.text)})  # fmt: skip
    # What the kept cache saved: each turn's whole prompt in a fresh session, median of 3.
    engine = window.worker.chat.session.engine
    for turn, prompt in zip(results, whole, strict=True):
        ttfts = [engine.session().generate(prompt, max_new_tokens=1).stats.ttft_s for _ in range(3)]
        turn["from_scratch_ttft_s"] = round(statistics.median(ttfts), 3)
    window.close()
    ordered = sorted(gaps)
    return {
        "turns": results,
        "ticks": len(gaps),
        "worst_gap_ms": round(ordered[-1] * 1000, 1),
        "p99_gap_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1),
        "median_gap_ms": round(statistics.median(ordered) * 1000, 1),
    }


def main(folder: str, launches: int, turns: int, new: int, json_path: str | None) -> None:
    server, display = virtual_screen.start()
    os.environ.update(DISPLAY=display, QT_QPA_PLATFORM="xcb")
    work = Path("/tmp/desktop-app-bench")
    work.mkdir(exist_ok=True)
    env = {**os.environ, "XDG_CONFIG_HOME": str(work / "config")}
    try:
        times = [launch(folder, env) for _ in range(launches + 1)]
        out = {
            "folder": folder,
            "launch_first_s": [round(t, 2) for t in times[0]],
            "launch_ready_s": round(statistics.median(t[0] for t in times[1:]), 2),
            "launch_warm_s": round(statistics.median(t[1] for t in times[1:]), 2),
            "launch_runs_s": [[round(x, 2) for x in t] for t in times[1:]],
            **window_turns(folder, turns, new, work / "settings.ini"),
        }
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(out, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--launches", type=int, default=5)
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--json", dest="json_path")
    main(**vars(p.parse_args()))
