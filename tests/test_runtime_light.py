"""The runtime is what apps embed: importing it must not drag in the export stack."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "nncf", "optimum", "onnx", "gguf")


def loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_runtime_imports_no_heavy_module():
    assert loaded_after("import qwen_edge.runtime, qwen_edge.runtime.generate, qwen_edge.runtime.tokenizer") == []


def test_cli_parser_imports_no_heavy_module():
    # `qwen-edge --help` must answer at once: commands import their heavy modules when run.
    assert loaded_after("from qwen_edge.cli.main import build_parser; build_parser()") == []
