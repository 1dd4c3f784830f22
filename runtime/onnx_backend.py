"""ONNX Runtime behind the engine: one InferenceSession per Engine, one KV cache per session, all
through IO binding (inputs and outputs bound to buffers we own: no per-token allocation of the
cache, no copy of it through Python).

- `ort` graph (GroupQueryAttention): one preallocated buffer per K / V, bound as both past and
  present: the kernel writes the new tokens in place (past_present_share_buffer, as
  onnxruntime-genai runs it). The buffer doubles when full. The folder's `runtime_file` (the
  same graph with logits for the last position only) runs when present.
- `portable` graph: present grows by concat inside the graph; its outputs are bound back as the
  next call's past, never copied to numpy.
- `static` graph pair: fixed window and capacity, two buffers that swap roles each call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import static_window
from .backend import forward_each, ranked
from .manifest import Manifest, listed

log = logging.getLogger(__name__)

PROVIDERS = {
    "CPU": "CPUExecutionProvider",
    "OPENVINO": "OpenVINOExecutionProvider",
    "XNNPACK": "XnnpackExecutionProvider",
    "NNAPI": "NnapiExecutionProvider",
    "QNN": "QNNExecutionProvider",
    "COREML": "CoreMLExecutionProvider",
}


class OnnxModel:
    """The Backend contract (runtime/backend.py) on ONNX Runtime."""

    name = "onnxruntime"

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        device: str,
        threads: int | None,
        config: dict,
        cache_dir=None,
        profile=False,
        all_logits=False,
        exact=False,  # the CPU provider computes these graphs in f32 already
    ):
        import onnxruntime as ort

        self.manifest, self.all_logits = manifest, all_logits

        provider = PROVIDERS.get(device.upper(), device)
        if provider not in ort.get_available_providers():
            raise RuntimeError(
                f"ONNX Runtime's {provider} is not present on this machine (available: "
                f"{', '.join(ort.get_available_providers())}); pass --device CPU or install an onnxruntime "
                "build that has it"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = True
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        if profile:
            options.enable_profiling = True
            import tempfile

            options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "qwen_edge_ort_profile")
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, str(value))
        providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        self.graph = manifest.graph
        graph_file = manifest.runtime_file or manifest.model_file
        self.session = ort.InferenceSession(str(listed(folder, manifest, graph_file)), options, providers=providers)
        inputs = {i.name: i for i in self.session.get_inputs()}
        # The runtime file takes how many last positions to project (num_logits); one
        # written before that input existed has the last only, and all_logits (evaluation,
        # speculative decoding) then needs model_file, whose logits cover every position.
        self.tail = "num_logits" in inputs
        if all_logits and not self.tail and graph_file != manifest.model_file:
            path = listed(folder, manifest, manifest.model_file)
            self.session = ort.InferenceSession(str(path), options, providers=providers)
            inputs = {i.name: i for i in self.session.get_inputs()}
        self.inputs = set(inputs)
        self.past = [n for n in inputs if n.startswith("past_key_values.")]
        first = inputs[self.past[0]]
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        # onnxruntime-genai's model builder leaves the head size symbolic ("kv_cache_dim"): the config has it
        config = manifest.config
        self.kv_heads = first.shape[1] if isinstance(first.shape[1], int) else config["num_key_value_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.head_dim = first.shape[3] if isinstance(first.shape[3], int) else head_dim
        self.capacity = manifest.max_context
        if self.graph == "static":
            shapes = manifest.shapes
            self.window, self.capacity = shapes["max_prompt"], shapes["max_context"]
            self.decode_session = ort.InferenceSession(
                str(listed(folder, manifest, manifest.decode_file)), options, providers=providers
            )

        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.logits_dtype = np.float16 if "float16" in logits.type else np.float32
        self.vocab = logits.shape[-1]
        self.last_only = self.tail or logits.shape[1] == 1 or logits.shape[1] == "1"

    def bind_logits(self, binding, n: int, every: bool = False, last: bool = False) -> np.ndarray:
        """A buffer the next run writes the logits into ([1, n or 1, vocab]): every position's when
        `every`, or when loaded with all_logits and not `last`."""
        rows = n if every or (self.all_logits and not last) or not self.last_only else 1
        if self.tail:
            binding.bind_cpu_input("num_logits", np.array([rows], np.int64))
        out = np.empty((1, rows, self.vocab), self.logits_dtype)
        binding.bind_output("logits", "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
        return out

    def last(self, logits: np.ndarray, last: bool = False) -> np.ndarray:
        """What a cache's append returns from a run's [1, n, vocab] logits. (`last` on a graph
        without num_logits still computes every position's.)"""
        every = self.all_logits and not last
        return logits[0].astype(np.float32) if every else logits[0, -1].astype(np.float32)

    def new_cache(self):
        if self.graph == "static":
            return self._static_cache()
        return SharedBufferCache(self) if self.graph == "ort" else GrowingCache(self)

    def new_batch(self, rows: int) -> list:
        """`rows` caches that `forward` runs together: rows of one buffer on the ort graph."""
        if self.graph == "ort" and (self.tail or not self.all_logits):  # every position's: num_logits
            from .ort_rows import RowPool

            return RowPool(self, rows).members
        return [self.new_cache() for _ in range(rows)]

    def forward(self, caches, ids) -> list[np.ndarray]:
        from . import ort_rows

        return ort_rows.forward(self, caches, ids) if self.graph == "ort" else forward_each(caches, ids)

    def profile(self, cache=None, top: int = 10) -> list[dict]:
        """Top operator types over every call since load (ONNX Runtime's profile; load with profile)."""
        totals: dict[str, float] = {}
        for e in json.loads(Path(self.session.end_profiling()).read_text()):
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                op = e.get("args", {}).get("op_name", "?")
                totals[op] = totals.get(op, 0.0) + e["dur"] / 1e6
        return ranked(totals, top)

    def _static_cache(self) -> static_window.StaticWindowCache:
        shape = (1, self.kv_heads, self.capacity, self.head_dim)
        buffers = [{n: _value(np.zeros(shape, self.kv_dtype)) for n in self.past} for _ in range(2)]

        def runner():
            sessions = {True: self.decode_session, False: self.session}
            bindings = {decode: s.io_binding() for decode, s in sessions.items()}

            def run(decode: bool, feed: dict, past: dict, present: dict) -> np.ndarray:
                b = bindings[decode]
                for name, array in feed.items():
                    b.bind_cpu_input(name, array)
                for name, value in past.items():
                    b.bind_ortvalue_input(name, value)
                    b.bind_ortvalue_output(name.replace("past_key_values", "present"), present[name])
                out = self.bind_logits(b, feed["input_ids"].shape[1], every=True)
                sessions[decode].run_with_iobinding(b)
                return out[0]

            return run

        def copy(values: dict) -> dict:
            return {n: _value(v.numpy().copy()) for n, v in values.items()}

        return static_window.StaticWindowCache(self.window, self.capacity, buffers, runner, copy)


def _value(array: np.ndarray):
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(array)


class SharedBufferCache:
    """The ort graph's cache: past and present are the same buffer, written in place."""

    def __init__(self, model: OnnxModel, initial: int = 1024):
        self.model, self.length = model, 0
        self.capacity = model.capacity
        self.binding = model.session.io_binding()
        self.arrays: dict[str, np.ndarray] = {}
        self._allocate(min(initial, self.capacity))

    def _allocate(self, size: int) -> None:
        m, old = self.model, self.arrays
        self.arrays = {n: np.zeros((1, m.kv_heads, size, m.head_dim), m.kv_dtype) for n in m.past}
        for name, array in old.items():  # keep what is cached
            self.arrays[name][:, :, : self.length] = array[:, :, : self.length]
        self.values = {n: _value(a) for n, a in self.arrays.items()}
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
            self.binding.bind_ortvalue_output(name.replace("past_key_values", "present"), value)
        self.mask = np.ones((1, size), np.int64)

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:
        end = self.length + len(ids)
        if end > self.capacity:
            raise static_window.ContextFull(
                f"{end} tokens exceed the model's {self.capacity} positions: start a new conversation"
            )
        if end > self.mask.shape[1]:
            self._allocate(min(self.capacity, max(end, 2 * self.mask.shape[1])))
        b = self.binding
        b.bind_cpu_input("input_ids", np.asarray(ids, np.int64)[None])
        b.bind_cpu_input("attention_mask", self.mask[:, :end])
        logits = self.model.bind_logits(b, len(ids), last=last)
        self.model.session.run_with_iobinding(b)
        self.length = end
        return self.model.last(logits, last)

    def trim(self, n: int) -> None:
        self.length = min(self.length, n)  # later slots are ignored (seqlens_k), then overwritten

    def fork(self) -> SharedBufferCache:
        other = SharedBufferCache(self.model, initial=self.mask.shape[1])
        for name, array in self.arrays.items():
            other.arrays[name][:, :, : self.length] = array[:, :, : self.length]
        other.length = self.length
        return other


class GrowingCache:
    """The portable graph's cache: present = concat(past, new), bound back as the next past."""

    def __init__(self, model: OnnxModel):
        self.model, self.length = model, 0
        self.capacity = model.capacity
        self.binding = model.session.io_binding()
        self.outputs = [o.name for o in model.session.get_outputs()]
        self._empty()

    def _empty(self) -> None:
        m = self.model
        empty = np.zeros((1, m.kv_heads, 0, m.head_dim), m.kv_dtype)
        self.past = {n: _value(empty) for n in m.past}

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:
        import onnxruntime as ort

        n, end = len(ids), self.length + len(ids)
        b = self.binding
        b.bind_cpu_input("input_ids", np.asarray(ids, np.int64)[None])
        b.bind_cpu_input("attention_mask", np.ones((1, end), np.int64))
        if "position_ids" in self.model.inputs:
            b.bind_cpu_input("position_ids", np.arange(self.length, end, dtype=np.int64)[None])
        for name, value in self.past.items():
            b.bind_ortvalue_input(name, value)
        m, present = self.model, {}
        for name in self.past:
            present[name] = ort.OrtValue.ortvalue_from_shape_and_type((1, m.kv_heads, end, m.head_dim), m.kv_dtype)
            b.bind_ortvalue_output(name.replace("past_key_values", "present"), present[name])
        logits = m.bind_logits(b, n, last=last)
        m.session.run_with_iobinding(b)
        self.past = present
        self.length = end
        return m.last(logits, last)

    def trim(self, n: int) -> None:
        if n == 0:
            self._empty()
        elif n < self.length:
            # A copy, always: with one KV head the slice is contiguous, ascontiguousarray returned a
            # view of the old buffer, and that buffer was freed with it (garbage KV after a trim).
            self.past = {k: _value(v.numpy()[:, :, :n].copy()) for k, v in self.past.items()}
        self.length = min(self.length, n)

    def fork(self) -> GrowingCache:
        other = GrowingCache(self.model)
        other.past = {k: _value(v.numpy().copy()) for k, v in self.past.items()}
        other.length = self.length
        return other
