"""Chat with an export folder in a desktop window (the `desktop` extra: PySide6).

The runtime runs in the app's own process, on a worker thread; the window shows the model, the
device, each reply's TTFT and tokens/s, and keeps the conversation in the KV cache.
"""

from __future__ import annotations


def configure_parser(p) -> None:
    p.add_argument("folder", nargs="?", help="an export folder (default: the last one opened)")
    p.add_argument("--device", help="CPU, GPU, NPU … (default: the last one used, else the first present)")


def run(folder: str | None = None, device: str | None = None) -> int:
    from qwen_edge.desktop_demo.app import main

    return main(folder, device)
