"""The qwen-edge command, run as a user runs it: in a subprocess."""

import os
import subprocess
import sys

from qwen_edge.models.shapes import random_model

from .gguf_writer import write_gguf


def qwen_edge(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "qwen_edge.cli.main", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_help_lists_commands():
    out = qwen_edge("--help")
    assert out.returncode == 0 and "demo" in out.stdout and "fetch" in out.stdout


def test_bad_model_is_one_line_error():
    out = qwen_edge("demo", "--model", "./no/such/model")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("qwen-edge demo: error: ")
    assert "Traceback" not in out.stderr


def test_demo_runs_end_to_end_on_a_tiny_gguf(tmp_path):
    path = write_gguf(random_model("tiny", seed=1), tmp_path / "tiny.gguf")
    env = dict(os.environ, QWEN_EDGE_CACHE=str(tmp_path / "cache"))
    args = ["demo", "--model", str(path), "--max-new-tokens", "5", "-p", "hello", "--bench-prompt", "8"]
    out = qwen_edge(*args, "--bench-new", "4", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(ln.startswith("[chat] assistant: ") for ln in lines) == 2
    assert [ln.split(":")[0] for ln in lines if ln.startswith("[export]")] == [
        "[export] " + str(tmp_path / "cache" / "exports" / name)
        for name in (f"{_key(path)}-onnx-int4", f"{_key(path)}-openvino-int4")
    ]
    assert "INT4 folder: export + NNCF" in out.stdout and "latency table" in out.stdout
    bench_rows = [ln.split()[1] for ln in lines if ln.startswith("exports/")]
    assert {"ours", "ort-genai", "llm-pipeline"} <= set(bench_rows)
    again = qwen_edge(*args, "--bench-new", "4", "--no-bench", env=env)  # the second run reuses both folders
    assert again.returncode == 0 and again.stdout.count("built earlier, verified") == 2
    assert "export + NNCF" not in again.stdout and "latency table" not in again.stdout


def _key(path):
    from qwen_edge.cli.demo import _key

    return _key(str(path))


def test_version_and_loudness_flags_anywhere(tmp_path):
    from importlib.metadata import version

    out = qwen_edge("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"qwen-edge {version('qwen-edge')}"
    folder = str(tmp_path / "f")
    loud = qwen_edge("export", "tiny", "-o", folder, "-v")  # after the command, as users type it
    assert loud.returncode == 0 and "INFO qwen_edge.export.to_onnx: exported" in loud.stderr
    quiet = qwen_edge("export", "tiny", "-o", folder, "--overwrite", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "onnx ort graph" in quiet.stdout  # the result line stays
    both = qwen_edge("-q", "export", "tiny", "-o", folder, "--overwrite", "-v")
    assert both.returncode == 2 and both.stderr.strip() == "qwen-edge export: error: -v and -q disagree: give one"


def test_nncf_logs_through_ours_and_only_with_verbose(tmp_path):
    gguf = write_gguf(random_model("tiny", seed=1), tmp_path / "tiny.gguf")
    env = dict(os.environ, QWEN_EDGE_CACHE=str(tmp_path / "cache"))
    # `export --quantize int4` no longer calls nncf.compress_weights (quantize/streamed.py): quantize does
    assert qwen_edge("export", str(gguf), "-o", str(tmp_path / "e"), "--format", "openvino", env=env).returncode == 0
    args = ["quantize", str(tmp_path / "e"), "-o", str(tmp_path / "q"), "--data-free", "--no-report"]
    plain = qwen_edge(*args, env=env)
    assert plain.returncode == 0, plain.stderr
    assert "nncf:" not in (plain.stdout + plain.stderr).lower()  # its INFO lines and tables: only with -v
    verbose = qwen_edge(*args, "--overwrite", "-v", env=env)
    nncf_lines = [ln for ln in verbose.stderr.splitlines() if "nncf:" in ln]
    assert nncf_lines and all(ln.startswith(("INFO nncf: ", "WARNING nncf: ", "DEBUG nncf: ")) for ln in nncf_lines[:1])
    assert "INFO:nncf:" not in verbose.stdout + verbose.stderr  # NNCF's own format never appears


def test_model_cache_flags_that_disagree(tmp_path):
    out = qwen_edge("generate", str(tmp_path), "-p", "hi", "--cache-dir", str(tmp_path / "c"), "--no-model-cache")
    assert out.returncode == 2
    assert out.stderr.strip() == "qwen-edge generate: error: --cache-dir and --no-model-cache disagree: give one"
