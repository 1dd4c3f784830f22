"""A desktop chat app (PySide6) that embeds qwen_edge.runtime in-process: no server, no torch.

    qwen-edge desktop [FOLDER]          or          python -m qwen_edge.desktop_demo [FOLDER]

The model loads and generates on a worker thread, so the window never waits for it; the chat's
turns stay in the session's KV cache, so each turn computes only itself.
"""
