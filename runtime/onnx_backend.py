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

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import static_window
from .manifest import listed

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
    def __init__(
        self,
        folder: Path,
        manifest: dict,
        device: str,
        threads: int | None,
        config: dict,
        cache_dir=None,
        profile=False,
    ):
        import onnxruntime as ort

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
        self.graph = manifest.get("graph")
        graph_file = manifest.get("runtime_file") or manifest["model_file"]
        self.session = ort.InferenceSession(str(listed(folder, manifest, graph_file)), options, providers=providers)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.inputs = set(inputs)
        self.past = [n for n in inputs if n.startswith("past_key_values.")]
        first = inputs[self.past[0]]
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        cfg = manifest.get("config", {})
        self.max_positions = cfg.get("max_position_embeddings") or 32768
        if self.graph == "static":
            shapes = manifest["shapes"]
            self.window, self.capacity = shapes["max_prompt"], shapes["max_context"]
            self.decode_session = ort.InferenceSession(
                str(listed(folder, manifest, manifest["decode_file"])), options, providers=providers
            )

        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.logits_dtype = np.float16 if "float16" in logits.type else np.float32
        self.vocab = logits.shape[-1]
        self.last_only = logits.shape[1] == 1 or logits.shape[1] == "1"

    def bind_logits(self, binding, n: int) -> np.ndarray:
        """A buffer the next run writes the logits into ([1, n or 1, vocab])."""
        out = np.empty((1, 1 if self.last_only else n, self.vocab), self.logits_dtype)
        binding.bind_output("logits", "cpu", 0, out.dtype, list(out.shape), out.ctypes.data)
        return out

    def new_cache(self):
        if self.graph == "static":
            return StaticCache(self)
        return SharedBufferCache(self) if self.graph == "ort" else GrowingCache(self)


def _value(array: np.ndarray):
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(array)


class SharedBufferCache:
    """The ort graph's cache: past and present are the same buffer, written in place."""

    def __init__(self, model: OnnxModel, initial: int = 1024):
        self.model, self.length, self.tokens = model, 0, []
        self.capacity = model.max_positions
        self.binding = model.session.io_binding()
        self._allocate(min(initial, self.capacity))

    def _allocate(self, size: int) -> None:
        m, old = self.model, getattr(self, "arrays", None)
        self.arrays = {n: np.zeros((1, m.kv_heads, size, m.head_dim), m.kv_dtype) for n in m.past}
        if old is not None:  # keep what is cached
            for name, array in old.items():
                self.arrays[name][:, :, : self.length] = array[:, :, : self.length]
        self.values = {n: _value(a) for n, a in self.arrays.items()}
        for name, value in self.values.items():
            self.binding.bind_ortvalue_input(name, value)
            self.binding.bind_ortvalue_output(name.replace("past_key_values", "present"), value)
        self.mask = np.ones((1, size), np.int64)

    def append(self, ids: Sequence[int]) -> np.ndarray:
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
        logits = self.model.bind_logits(b, len(ids))
        self.model.session.run_with_iobinding(b)
        self.length = end
        return logits[0, -1].astype(np.float32)

    def truncate(self, n: int) -> None:
        self.length = min(self.length, n)  # later slots are ignored (seqlens_k), then overwritten


class GrowingCache:
    """The portable graph's cache: present = concat(past, new), bound back as the next past."""

    def __init__(self, model: OnnxModel):
        self.model, self.length = model, 0
        self.capacity = model.max_positions
        self.binding = model.session.io_binding()
        self.outputs = [o.name for o in model.session.get_outputs()]
        self._empty()

    def _empty(self) -> None:
        m = self.model
        empty = np.zeros((1, m.kv_heads, 0, m.head_dim), m.kv_dtype)
        self.past = {n: _value(empty) for n in m.past}

    def append(self, ids: Sequence[int]) -> np.ndarray:
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
        logits = m.bind_logits(b, n)
        m.session.run_with_iobinding(b)
        self.past = present
        self.length = end
        return logits[0, -1].astype(np.float32)

    def truncate(self, n: int) -> None:
        if n == 0:
            self._empty()
        elif n < self.length:
            self.past = {k: _value(np.ascontiguousarray(v.numpy()[:, :, :n])) for k, v in self.past.items()}
        self.length = min(self.length, n)


class StaticCache:
    """The static pair's cache: fixed [1, kv, capacity, d] buffers that swap each call."""

    def __init__(self, model: OnnxModel):
        self.model, self.length, self.tokens = model, 0, []
        self.capacity, self.window = model.capacity, model.window
        shape = (1, model.kv_heads, self.capacity, model.head_dim)
        self.buffers = [{n: _value(np.zeros(shape, model.kv_dtype)) for n in model.past} for _ in range(2)]
        self.current = 0
        self.bindings = {s: s.io_binding() for s in (model.session, model.decode_session)}

    def append(self, ids: Sequence[int]) -> np.ndarray:
        plan = static_window.plan(self.length, len(ids), self.window, self.capacity)
        self.tokens = self.tokens[: self.length] + list(ids)
        for chunk in plan:
            session = self.model.decode_session if chunk.size == 1 else self.model.session
            b = self.bindings[session]
            tokens = self.tokens[chunk.start : chunk.end] + [0] * (chunk.size - chunk.real)
            slots = np.arange(chunk.start, chunk.start + chunk.size, dtype=np.int64)
            b.bind_cpu_input("input_ids", np.array([tokens], np.int64))
            b.bind_cpu_input("attention_mask", (np.arange(self.capacity) < chunk.end).astype(np.int64)[None])
            b.bind_cpu_input("position_ids", slots[None])
            b.bind_cpu_input("cache_position", slots)
            past, present = self.buffers[self.current], self.buffers[1 - self.current]
            for name, value in past.items():
                b.bind_ortvalue_input(name, value)
                b.bind_ortvalue_output(name.replace("past_key_values", "present"), present[name])
            out = self.model.bind_logits(b, chunk.size)
            session.run_with_iobinding(b)
            self.current = 1 - self.current
            logits = out[0, chunk.real - 1]
        self.length += len(ids)
        return logits.astype(np.float32)

    def truncate(self, n: int) -> None:
        self.length = min(self.length, n)
