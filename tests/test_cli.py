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
    out = qwen_edge("demo", "--model", str(path), "--max-new-tokens", "5", "-p", "hello", env=env)
    assert out.returncode == 0, out.stderr
    assert "[chat] assistant (ONNX Runtime):" in out.stdout and "[chat] assistant (torch reference):" in out.stdout
    assert "ONNX Runtime: time to first token" in out.stdout
    assert "[export]" in out.stdout and "ONNX Runtime" in out.stdout
    assert "[quantize INT4 (NNCF)] not run" in out.stdout  # steps that do not exist yet say so
