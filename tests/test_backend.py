"""The backend contract (runtime/backend.py) on every folder kind: trim rolls back, fork copies,
forward runs several sequences, and all of it equals a fresh run of the same tokens."""

import numpy as np
import pytest

from qwen_edge.runtime import backend
from qwen_edge.runtime.backend import BACKENDS

KINDS = ["openvino", "openvino-stateless", "npu", "ort", "portable", "static"]
PROMPT = [5, 17, 300, 2, 99, 41, 7, 8, 9, 10, 11]


def load(folder):
    return backend.load(folder, exact=True)


def fresh(b, ids):
    return b.new_cache().append(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_the_contract_on_every_folder_kind(export_kinds, kind):
    _, tmp = export_kinds
    b = load(tmp / kind)
    assert b.name == BACKENDS[b.manifest.format][0] and isinstance(b.capacity, int) and b.capacity > len(PROMPT)
    cache = b.new_cache()
    cache.append(PROMPT)
    assert cache.length == len(PROMPT)

    fork = cache.fork()  # a copy: the same next logits, and independent afterwards
    np.testing.assert_allclose(fork.append([42]), fresh(b, PROMPT + [42]), atol=1e-4)
    np.testing.assert_allclose(cache.append([43]), fresh(b, PROMPT + [43]), atol=1e-4)
    np.testing.assert_allclose(fork.append([44]), fresh(b, PROMPT + [42, 44]), atol=1e-4)

    cache.trim(5)  # roll back rejected tokens, then go on as if they never came
    assert cache.length == 5
    np.testing.assert_allclose(cache.append([77, 78]), fresh(b, PROMPT[:5] + [77, 78]), atol=1e-4)
    cache.trim(0)
    np.testing.assert_allclose(cache.append(PROMPT[:3]), fresh(b, PROMPT[:3]), atol=1e-4)

    a, c = b.new_cache(), b.new_cache()  # several sequences at different positions
    a.append(PROMPT)
    got = b.forward([a, c], [[9], PROMPT[:4]])
    np.testing.assert_allclose(got[0], fresh(b, PROMPT + [9]), atol=1e-4)
    np.testing.assert_allclose(got[1], fresh(b, PROMPT[:4]), atol=1e-4)


@pytest.mark.parametrize("kind", ["openvino", "ort", "portable"])
def test_all_logits_cover_every_position(export_kinds, kind):
    _, tmp = export_kinds
    every = backend.load(tmp / kind, all_logits=True, exact=True).new_cache().append(PROMPT)
    b = load(tmp / kind)
    assert every.shape[0] == len(PROMPT)
    for n in (1, 6, len(PROMPT)):
        np.testing.assert_allclose(every[n - 1], fresh(b, PROMPT[:n]), atol=1e-4)


@pytest.mark.parametrize("kind", ["openvino", "ort"])
def test_profile_names_operators(export_kinds, kind):
    _, tmp = export_kinds
    b = backend.load(tmp / kind, profile=True)
    cache = b.new_cache()
    cache.append(PROMPT)
    cache.append([3])
    top = b.profile(cache)
    ops = {row["op"] for row in top}
    assert (
        top
        and abs(sum(r["share"] for r in top) - 1) < 0.2
        and ("MatMul" in ops or "FullyConnected" in ops or "MatMulNBits" in ops)
    ), top


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_decodes_rows_at_different_positions_in_one_call(export_kinds, kind):
    """new_batch + forward: on `ort` rows of one buffer run together (an idle row in between, a
    longer idle row, trim and fork of a row included); elsewhere independent caches. Each row's
    logits equal a fresh run of its own tokens."""
    _, tmp = export_kinds
    b = load(tmp / kind)
    rows = b.new_batch(4)
    assert len(rows) == 4
    prompts = [PROMPT, PROMPT[:3], None, PROMPT[:7]]
    held = {}
    for i, p in enumerate(prompts):
        if p is not None:
            rows[i].append(p)
            held[i] = list(p)
    rows[2].append(PROMPT + PROMPT[:5])  # idle during the steps below, and longer than the others
    for step in range(3):
        active = [i for i in held]
        got = b.forward([rows[i] for i in active], [[40 + step + i] for i in active])
        for i, logits in zip(active, got, strict=True):
            held[i].append(40 + step + i)
            np.testing.assert_allclose(logits, fresh(b, held[i]), atol=1e-4)
    np.testing.assert_allclose(rows[2].append([5]), fresh(b, PROMPT + PROMPT[:5] + [5]), atol=1e-4)
    rows[0].trim(4)
    np.testing.assert_allclose(b.forward([rows[0]], [[8]])[0], fresh(b, PROMPT[:4] + [8]), atol=1e-4)
    np.testing.assert_allclose(rows[3].fork().append([1]), fresh(b, held[3] + [1]), atol=1e-4)
    if kind == "ort":  # one buffer: the rows really are batched
        assert len({id(r.pool) for r in rows}) == 1


def test_an_int4_row_decodes_alike_alone_and_beside_others(tmp_path, monkeypatch):
    """MatMulNBits computes one row in another order than several, and int8 activations magnify it
    (ort_rows.MIN_ROWS): a lone row runs beside a throwaway one, so its logits are bit for bit those
    it gets in a batch of 3 — a server's answer does not depend on its load."""
    from qwen_edge.quantize import recipes
    from qwen_edge.quantize.pipeline import build

    from .gguf_writer import write_gguf
    from .test_streamed_quantize import small

    monkeypatch.setitem(recipes.DEFAULT_INT4, (128, 3), {"group_size": 32, "ratio": 0.8})  # 4- and 8-bit
    build(str(write_gguf(small(False), tmp_path / "m.gguf")), tmp_path / "q", quantize="int4")
    b = load(tmp_path / "q")
    rows = b.new_batch(3)
    for i, row in enumerate(rows):
        row.append(PROMPT[: 5 + i])
    alone = b.forward(rows[:1], [[9]])[0]
    rows[0].trim(5)
    together = b.forward(rows, [[9], [10], [11]])[0]
    assert np.array_equal(alone, together)


@pytest.mark.parametrize("kind", ["openvino", "ort", "portable"])
def test_batch_rows_loaded_for_speculation_check_guesses_in_one_call(export_kinds, kind):
    """With all_logits (the server's prompt lookup): a batch row's prefill gives the last position,
    an append of a token and its guesses every position's, rows still decode together, and a trim
    after a refused guess goes on as if it never came."""
    _, tmp = export_kinds
    b, plain = backend.load(tmp / kind, all_logits=True, exact=True), load(tmp / kind)
    rows = b.new_batch(2)
    np.testing.assert_allclose(rows[0].append(PROMPT, last=True), fresh(plain, PROMPT), atol=1e-4)
    rows[1].append(PROMPT[:4], last=True)
    checked = rows[0].append([3, 4, 5])
    assert checked.shape[0] == 3
    for j in range(3):
        np.testing.assert_allclose(checked[j], fresh(plain, PROMPT + [3, 4, 5][: j + 1]), atol=1e-4)
    rows[0].trim(len(PROMPT) + 1)  # the guess 4 refused
    got = [np.reshape(g, (-1, g.shape[-1]))[-1] for g in b.forward(rows, [[6], [7]])]  # [vocab] or [1, vocab]
    np.testing.assert_allclose(got[0], fresh(plain, PROMPT + [3, 6]), atol=1e-4)
    np.testing.assert_allclose(got[1], fresh(plain, PROMPT[:4] + [7]), atol=1e-4)
    if kind == "ort":  # rows of one buffer, as without all_logits
        assert len({id(r.pool) for r in rows}) == 1
