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


# Each package imports only packages before it in this order (lazy imports included), and no
# module imports itself back through others: the cuts the backend contract and the pipeline rely on.
LAYERS = ("runtime", "models", "export", "quantize", "bench", "server", "desktop_demo", "cli")


def _imports(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            package = path.parent.name
            yield f"qwen_edge.{package}.{node.module}" if node.module else f"qwen_edge.{package}"
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_packages_import_only_the_layers_below_them():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    upward = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((root / package).glob("*.py")):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "qwen_edge" and len(parts) > 1 and parts[1] in LAYERS:
                    if LAYERS.index(parts[1]) > rank:
                        upward.append(f"{path.relative_to(root)} imports {module}")
    assert upward == []
