"""`pip install qwen-edge` with no extras, from the built wheel, in a fresh virtual environment:
the runtime on ONNX Runtime installs alone, generates, and says which extra the rest needs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
BARE_LIMIT_MB = 250  # the install-size goal of the desktop / embedding issue
HEAVY = ("torch", "transformers", "openvino", "nncf", "onnx", "optimum", "PySide6")


def run(*args, check=True, **kwargs):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def build_wheel(dest: Path) -> Path:
    """The wheel, built from a copy of exactly the files pyproject.toml packages (a build/ folder
    in the tree can carry stale modules into a wheel)."""
    src = dest / "src"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for folder in project["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "test-artifacts"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dest / "dist", src)
    (wheel,) = (dest / "dist").glob("qwen_edge-*.whl")
    return wheel


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A fresh venv (no pip of its own) with the wheel installed at the pinned versions."""
    tmp = tmp_path_factory.mktemp("bare")
    wheel = build_wheel(tmp)
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, "-c", ROOT / "constraints.txt")
    return venv


def site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


def test_the_bare_install_is_the_runtime_alone(bare):
    site = site_packages(bare)
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"qwen_edge", "onnxruntime", "numpy", "tokenizers", "jinja2"} <= installed
    assert not installed & {h.lower() for h in HEAVY}, installed & {h.lower() for h in HEAVY}
    mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    assert mb <= BARE_LIMIT_MB, f"the bare install is {mb:.0f} MB"


def test_the_bare_install_generates_like_the_full_one(bare, export_kinds):
    _, tmp = export_kinds
    code = (
        "import json, sys; from qwen_edge.runtime import Engine\n"
        "r = Engine.load(sys.argv[1]).generate([5, 17, 300, 2], max_new_tokens=8, ignore_eos=True)\n"
        "print(json.dumps({'ids': r.token_ids, 'mods': sorted(m for m in sys.modules if '.' not in m)}))"
    )
    env = {**os.environ, "QWEN_EDGE_CACHE": str(tmp / "bare-cache")}
    got = json.loads(run(bare / "bin" / "python", "-c", code, tmp / "ort", env=env).stdout)
    from qwen_edge.runtime import Engine

    assert got["ids"] == Engine.load(tmp / "ort").generate([5, 17, 300, 2], max_new_tokens=8, ignore_eos=True).token_ids
    assert not set(got["mods"]) & set(HEAVY)
    cli = run(bare / "bin" / "qwen-edge", "generate", tmp / "ort", "-p", "hello", "--max-new-tokens", "4", env=env)
    assert cli.stdout.strip()


def test_the_bare_install_names_the_extra_a_command_needs(bare, export_kinds):
    _, tmp = export_kinds
    qwen_edge = bare / "bin" / "qwen-edge"
    cases = [
        ((qwen_edge, "generate", tmp / "openvino", "-p", "hi"), "pip install 'qwen-edge[openvino]'"),
        ((qwen_edge, "export", tmp / "m.gguf", "-o", tmp / "never"), "pip install 'qwen-edge[export]'"),
        ((qwen_edge, "desktop", tmp / "ort"), "pip install 'qwen-edge[desktop]'"),
        ((qwen_edge, "serve", tmp / "ort"), "pip install 'qwen-edge[serve]'"),
    ]
    for args, fix in cases:
        out = run(*args, check=False, env={**os.environ, "QWEN_EDGE_CACHE": str(tmp / "bare-cache")})
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and fix in lines[0], out.stderr[-2000:]
    assert not (tmp / "never").exists()
