"""Several sequences in one forward on the `ort` graph: each sequence is a row of one KV buffer per
layer ([rows, kv heads, slots, head dim]), bound as both past and present as SharedBufferCache does
for one. GroupQueryAttention reads each row's length from its attention-mask row (seqlens_k), so
rows at different positions decode together: row r's new token is written at its own length and
attends to its own positions. A batched call covers rows 0..hi (hi the highest row asked for);
rows in that range that were not asked for get a throwaway token written past their length, where
nothing reads it and the next real token overwrites it. A decode step runs at least 2 rows
(MIN_ROWS), so that a sequence's logits do not depend on how many others share the step.

Prefill runs one row at a time (GroupQueryAttention's prompt phase wants equal lengths); decode
steps run every asked row in one call. On a model loaded with all_logits (speculative decoding), a
row's append returns every fed position's logits (the graph's num_logits input), as a single
sequence's cache does: how the server checks a row's prompt-lookup guesses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import static_window

# MatMulNBits computes a single row (M = 1) in another order than several, and its int8
# activations (accuracy_level 4) magnify the difference: up to 0.3 in the real 0.5B INT4's logits,
# enough to flip a greedy near tie. From 2 rows on, a row's results do not depend on how many run
# beside it (bit for bit at 2..8, measured). So a lone row decodes with a throwaway second one and
# a request's answer is the same alone and under load, for 9% more time per step alone (17.6 ->
# 19.2 ms on the real 0.5B INT4; benchmarks/RESULTS.md).
MIN_ROWS = 2


class RowPool:
    def __init__(self, model, rows: int, initial: int = 256):
        self.model, self.rows = model, rows
        self.binding = model.session.io_binding()
        self.slots = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.members = [PoolRow(self, r) for r in range(rows)]
        self._grow(min(initial, model.capacity))

    def _grow(self, slots: int) -> None:
        """Room for `slots` positions per row; what rows hold is kept."""
        m, old, keep = self.model, self.arrays, self.slots
        self.arrays = {n: np.zeros((self.rows, m.kv_heads, slots, m.head_dim), m.kv_dtype) for n in m.past}
        for name, array in old.items():
            self.arrays[name][:, :, :keep] = array
        self.slots = slots

    def _room(self, end: int) -> None:
        if end > self.model.capacity:
            raise static_window.ContextFull(
                f"{end} tokens exceed the model's {self.model.capacity} positions: start a new conversation"
            )
        if end > self.slots:
            self._grow(min(self.model.capacity, max(end, 2 * self.slots)))

    def _bind(self, lo: int, hi: int, ids: np.ndarray, mask: np.ndarray, positions: int = 1) -> np.ndarray:
        """Run rows lo..hi-1 (contiguous in every buffer: rows are the outer dimension); the logits
        of each row's last `positions` fed positions (all of them on a graph without num_logits)."""
        m, b = self.model, self.binding
        b.bind_cpu_input("input_ids", ids)
        if m.tail:
            b.bind_cpu_input("num_logits", np.array([positions], np.int64))
        b.bind_cpu_input("attention_mask", mask)
        for name, array in self.arrays.items():
            part = array[lo:hi]
            for kind in ("past_key_values", "present"):
                b_name = name.replace("past_key_values", kind)
                bind = b.bind_input if kind == "past_key_values" else b.bind_output
                bind(b_name, "cpu", 0, part.dtype, list(part.shape), part.ctypes.data)
        n = ids.shape[1]
        logits = np.empty((hi - lo, positions if m.tail else 1 if m.last_only else n, m.vocab), m.logits_dtype)
        b.bind_output("logits", "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        m.session.run_with_iobinding(b)
        return logits

    def prefill(self, row: PoolRow, ids: Sequence[int], last: bool = True) -> np.ndarray:
        """Feed `ids` to one row: the last position's logits, or every fed position's ([n, vocab])
        unless `last` on a model loaded with all_logits."""
        end, every = row.length + len(ids), self.model.all_logits and not last
        self._room(end)
        ids_2d, mask = np.asarray(ids, np.int64)[None], np.ones((1, end), np.int64)
        logits = self._bind(row.index, row.index + 1, ids_2d, mask, len(ids) if every else 1)
        row.length = end
        return logits[0].astype(np.float32) if every else logits[0, -1].astype(np.float32)

    def decode(self, rows: Sequence[PoolRow], tokens: Sequence[int]) -> list[np.ndarray]:
        """One new token for each of `rows`, in one call: their last-position logits, in order.
        At least 2 rows run (a throwaway one beside a lone row; see MIN_ROWS)."""
        hi = max(max(r.index for r in rows) + 1, min(MIN_ROWS, self.rows))
        for idle in self.members[:hi]:  # an idle row at the limit gives up its last position, not the batch
            if idle.length >= self.model.capacity and idle not in rows:
                idle.length = self.model.capacity - 1
        lengths = np.array([member.length for member in self.members[:hi]])
        self._room(int(lengths.max()) + 1)
        ids = np.zeros((hi, 1), np.int64)
        for row, token in zip(rows, tokens, strict=True):
            ids[row.index, 0] = token
        mask = (np.arange(int(lengths.max()) + 1)[None, :] <= lengths[:, None]).astype(np.int64)  # right-padded
        logits = self._bind(0, hi, ids, mask)
        for row in rows:
            row.length += 1
        return [logits[row.index, -1].astype(np.float32) for row in rows]


class PoolRow:
    """One row of a RowPool: the KVCache contract for one sequence."""

    def __init__(self, pool: RowPool, index: int):
        self.pool, self.index, self.length = pool, index, 0

    @property
    def capacity(self) -> int:
        return self.pool.model.capacity

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:
        return self.pool.prefill(self, ids, last)

    def trim(self, n: int) -> None:
        self.length = min(self.length, n)  # later slots are ignored (seqlens_k), then overwritten

    def fork(self):
        """A standalone copy (a SharedBufferCache): forks are for trying tokens, not for batching."""
        from .onnx_backend import SharedBufferCache

        other = SharedBufferCache(self.pool.model, initial=max(self.length, 1))
        for name, array in self.pool.arrays.items():
            other.arrays[name][0, :, : self.length] = array[self.index, :, : self.length]
        other.length = self.length
        return other


def forward(model, caches, ids) -> list[np.ndarray]:
    """The ort backend's Backend.forward: rows of one pool, one token each, in one call; anything
    else one call per sequence."""
    from .backend import forward_each

    pools = {id(c.pool) for c in caches if isinstance(c, PoolRow)}
    if len(pools) == 1 and all(isinstance(c, PoolRow) for c in caches) and all(len(s) == 1 for s in ids):
        return caches[0].pool.decode(caches, [s[0] for s in ids])
    return forward_each(caches, ids)
