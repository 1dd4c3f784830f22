"""QWEN_EDGE_CACHE for a block of a module-scoped fixture."""

import contextlib

import pytest


@contextlib.contextmanager
def cache_at(folder: str):
    """QWEN_EDGE_CACHE set to `folder` inside the block only (module fixtures cannot take the
    monkeypatch fixture; an assignment to os.environ leaked into every later test, and the real
    model was then fetched again into a temporary folder)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN_EDGE_CACHE", folder)
        yield
