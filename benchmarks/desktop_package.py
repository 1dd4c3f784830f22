"""A desktop app as users get it: a PyInstaller one-folder build, its size on disk, cold start to a
ready window with a real model folder, and idle memory. Ours (the desktop_demo chat app, ONNX
Runtime only, and with OpenVINO too) beside a minimal Qt app on openvino_genai and one on
onnxruntime_genai, built the same way.

    .venv/bin/python benchmarks/desktop_package.py --onnx ORT_FOLDER --openvino IR_FOLDER \
        [--rounds 5] [--work /tmp/desktop-package] [--json benchmarks/desktop_package.json]

"Ready": the window is shown and takes a message — for the minimal apps once the pipeline has
made one token; ours logs "ready:" once the model is loaded, then "warm:" once its warm-up token
is done (a message sent between the two waits for it). Times are taken from the launch. Rounds run
one after another with the OS file cache warm (the first launch after a build is reported apart:
it reads the bundle from disk). Idle RSS: 2 s after ready, the process and any children.
Runs under Xvfb (started here), Qt's xcb platform.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from qwen_edge.desktop_demo import virtual_screen

ROOT = Path(__file__).resolve().parents[1]
# Modules an app on the runtime never needs; PyInstaller would otherwise follow optional imports
# (huggingface_hub -> torch, ...) into the bundle. Each build also excludes the other apps' engines.
NEVER = ["torch", "transformers", "nncf", "onnx", "onnxscript", "optimum", "matplotlib", "tkinter", "scipy",
         "pandas", "sympy", "gguf", "safetensors", "accelerate", "IPython", "pytest", "hypothesis", "PIL"]  # fmt: skip

OURS = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from qwen_edge.desktop_demo.app import main
sys.exit(main(sys.argv[1], "CPU"))
"""

# The minimal apps: a window that loads the pipeline, makes one token, and says ready.
MINIMAL = """
import sys, time
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication(sys.argv[:1])
window = QLabel("loading…"); window.resize(600, 400); window.show(); app.processEvents()
folder = sys.argv[1]
{load}
window.setText("ready"); app.processEvents()
print("ready:", folder, file=sys.stderr, flush=True)
sys.exit(app.exec())
"""
LOAD = {
    "openvino_genai": """
import openvino_genai
pipe = openvino_genai.LLMPipeline(folder, "CPU")
config = openvino_genai.GenerationConfig(); config.max_new_tokens = 1
pipe.generate("hi", config)
""",
    "onnxruntime_genai": """
import onnxruntime_genai as og
model = og.Model(folder); tokenizer = og.Tokenizer(model)
params = og.GeneratorParams(model); params.set_search_options(max_length=64)
generator = og.Generator(model, params)
generator.append_tokens(tokenizer.encode("hi")); generator.generate_next_token()
""",
}

def _openvino_ir_frontend() -> list[str]:
    """OpenVINO loads its device plugins and the IR frontend by name (nothing links to them), and
    PyInstaller's --collect-binaries matches lib*.so (the plugins), not the versioned
    libopenvino_ir_frontend.so.2641."""
    import importlib.util

    libs = Path(importlib.util.find_spec("openvino").origin).parent / "libs"
    frontend = [f"--add-binary={lib}:openvino/libs" for lib in libs.glob("libopenvino_ir_frontend.so*")]
    return ["--collect-binaries", "openvino", *frontend]  # the device plugins (lib*.so) and the frontend


def _onnxruntime_library() -> list[str]:
    """onnxruntime_genai loads onnxruntime/capi/libonnxruntime.so* itself, by path (found through
    the onnxruntime package), so the library must sit there in the bundle too."""
    import importlib.util

    capi = Path(importlib.util.find_spec("onnxruntime").origin).parent / "capi"
    libs = [f"--add-binary={lib}:onnxruntime/capi" for lib in capi.glob("libonnxruntime.so*")]
    return ["--hidden-import", "onnxruntime", *libs]


APPS = {
    # name: (entry source, folder kind, PyInstaller options)
    "ours (ONNX Runtime)": (OURS, "onnx", ["--exclude-module", "openvino", "--exclude-module", "openvino_genai",
                                           "--exclude-module", "onnxruntime_genai",
                                           "--hidden-import", "qwen_edge.runtime.onnx_backend"]),  # fmt: skip
    # backend.py imports the backends by name, which PyInstaller's analysis cannot follow
    "ours (+ OpenVINO)": (OURS, "openvino", ["--exclude-module", "openvino_genai", "--exclude-module",
                                             "onnxruntime_genai", *_openvino_ir_frontend(),
                                             "--hidden-import", "qwen_edge.runtime.openvino_backend"]),  # fmt: skip
    "openvino_genai": (MINIMAL.replace("{load}", LOAD["openvino_genai"]), "openvino",
                       ["--collect-all", "openvino_genai", "--collect-all", "openvino_tokenizers",
                        *_openvino_ir_frontend(), "--exclude-module", "onnxruntime",
                        "--exclude-module", "onnxruntime_genai"]),  # fmt: skip
    "onnxruntime_genai": (MINIMAL.replace("{load}", LOAD["onnxruntime_genai"]), "onnx",
                          ["--collect-all", "onnxruntime_genai", *_onnxruntime_library(),
                           "--exclude-module", "openvino",
                           "--exclude-module", "openvino_genai"]),  # fmt: skip
}


def build(name: str, source: str, options: list[str], work: Path) -> tuple[Path, float]:
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    folder = work / slug
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    entry = folder / "app.py"
    entry.write_text(source)
    excludes = [arg for module in NEVER for arg in ("--exclude-module", module)]
    # The editable install maps qwen_edge.* onto the top-level folders through an import hook that
    # PyInstaller's analysis does not see: lay the package out plainly for it.
    stage = folder / "stage" / "qwen_edge"
    for package in ("runtime", "desktop_demo"):
        shutil.copytree(ROOT / package, stage / package, ignore=shutil.ignore_patterns("__pycache__", "test-*"))
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--onedir", "--noconfirm", "--log-level", "WARN", "--name", "app",
         "--distpath", folder / "dist", "--workpath", folder / "build", "--specpath", folder,
         "--paths", stage.parent, *excludes, *options,
         entry],
        check=True,
    )  # fmt: skip
    return folder / "dist" / "app", time.perf_counter() - t


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def launch(app: Path, folder: Path, env: dict, warms: bool) -> dict:
    """Seconds from launch to the "ready:" line (the window takes a message) and, for ours, to
    "warm:" (its warm-up inference done; the minimal apps make their token before "ready:")."""
    start = time.perf_counter()
    proc = subprocess.Popen([app / "app", str(folder)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        times, log = {}, []
        for line in proc.stderr:
            log.append(line)
            if "ready:" in line:
                times["ready_s"] = time.perf_counter() - start
            if "warm:" in line:
                times["warm_s"] = time.perf_counter() - start
            if line.startswith(("WARNING", "ERROR")) and "qwen_edge" in line:  # the window shows an error
                raise RuntimeError(f"{app}: {line.strip()}")
            if "ready_s" in times and (not warms or "warm_s" in times):
                break
        else:
            raise RuntimeError(f"{app} exited before ready:\n" + "".join(log[-20:]))
        times.setdefault("warm_s", times["ready_s"])
        time.sleep(2.0)
        return {**times, "idle_rss_mb": rss_mb(proc.pid)}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(onnx: str, openvino: str, rounds: int, work: str, json_path: str | None, only: str | None) -> None:
    folders = {"onnx": Path(onnx).resolve(), "openvino": Path(openvino).resolve()}
    work_dir = Path(work)
    server, display = virtual_screen.start()
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "XDG_CONFIG_HOME": str(work_dir / "config")}
    rows = []
    try:
        for name, (source, kind, options) in APPS.items():
            if only and only not in name:
                continue
            app, build_s = build(name, source, options, work_dir)
            warms = source is OURS
            first = launch(app, folders[kind], env, warms)
            runs = [launch(app, folders[kind], env, warms) for _ in range(rounds)]
            row = {
                "app": name, "folder": str(folders[kind]), "build_s": round(build_s, 1),
                "size_mb": round(size_mb(app), 1), "first_ready_s": round(first["ready_s"], 2),
                "ready_s": round(statistics.median(r["ready_s"] for r in runs), 2),
                "warm_s": round(statistics.median(r["warm_s"] for r in runs), 2),
                "ready_s_runs": [round(r["ready_s"], 2) for r in runs],
                "idle_rss_mb": round(statistics.median(r["idle_rss_mb"] for r in runs), 1),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait(10)
    print("\n| app | folder | bundle MB | first launch: ready s | ready s | warm s | idle RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['app']} | {Path(r['folder']).name} | {r['size_mb']:.0f} | {r['first_ready_s']:.2f} | "
              f"{r['ready_s']:.2f} | {r['warm_s']:.2f} | {r['idle_rss_mb']:.0f} |")  # fmt: skip
    if json_path:
        Path(json_path).write_text(json.dumps({"rounds": rounds, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True, help="an INT4 ONNX Runtime folder (ours; has genai_config.json)")
    p.add_argument("--openvino", required=True, help="an INT4 OpenVINO folder (ours; has openvino_tokenizer.xml)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--work", default="/tmp/desktop-package")
    p.add_argument("--json", dest="json_path")
    p.add_argument("--only", help="build and measure only the apps whose name contains this")
    main(**vars(p.parse_args()))
