"""OpenVINO behind the engine: one compiled model per Engine, one infer request (and KV cache)
per session.

- dynamic stateless IR (`--stateless`): past / present tensors passed back each call;
- dynamic stateful IR (the CPU / iGPU export): the cache is the request's state; the logits
  MatMul is cut to the last position at load (as openvino.genai does), so a prompt's prefill
  does not multiply every token by the vocabulary;
- static IR pair (the NPU export): fixed prompt window and KV capacity, explicit KV tensors kept
  in two preallocated buffers that swap roles each call (`static_window`).
Device strings pass through to OpenVINO; compiled blobs go to `cache_dir` (CACHE_DIR) when given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import static_window, user_cache
from .backend import forward_each, ranked
from .manifest import Manifest, listed

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # tokens per prefill call on the stateful IR
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}  # no bf16 compute, no u8 KV cache


class OpenVINOModel:
    """The Backend contract (runtime/backend.py) on OpenVINO."""

    name = "openvino"

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        device: str,
        threads: int | None,
        config: dict,
        cache_dir,
        profile=False,
        all_logits=False,
        exact=False,
    ):
        import openvino as ov

        self.manifest, self.all_logits = manifest, all_logits
        self.profiling, self.requests = profile, []

        self.core, self.static = ov.Core(), manifest.graph == "static"
        options = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            options["INFERENCE_NUM_THREADS"] = int(threads)
        if profile:
            options["PERF_COUNT"] = True
        if exact:
            options.update(EXACT)
        options.update(config or {})
        if cache_dir is not False:
            options["CACHE_DIR"] = compile_cache(cache_dir, device, options)
        present = {d.split(".")[0] for d in self.core.available_devices}
        if device.split(".")[0] not in present and not device.startswith(("AUTO", "HETERO", "MULTI")):
            if not present:  # a packaged app that left OpenVINO's plugin libraries behind, say
                raise RuntimeError(
                    f"OpenVINO found no devices at all: its plugin libraries (libopenvino_*_plugin.so) are "
                    f"missing from {Path(ov.__file__).parent}; reinstall openvino"
                )
            raise RuntimeError(
                f"OpenVINO device {device} is not present on this machine (found: "
                f"{', '.join(self.core.available_devices)}); pass --device CPU"
            )
        if self.static:
            shapes = manifest.shapes
            self.window, self.capacity = shapes["max_prompt"], shapes["max_context"]
            weights = manifest.weights_file  # the pair shares one weights file

            def compiled(name):
                xml = str(listed(folder, manifest, name))
                bin_ = listed(folder, manifest, weights or name.removesuffix(".xml") + ".bin")
                return self.core.compile_model(self.core.read_model(xml, str(bin_)), device, options)

            self.prefill = compiled(manifest.model_file)
            self.decode = compiled(manifest.decode_file)
            self.past = [p.get_any_name() for p in self.decode.inputs if p.get_any_name().startswith("past_key")]
            shape = self.decode.input(self.past[0]).get_partial_shape()
            self.kv_shape = [d.get_length() for d in shape]
            self.kv_dtype = self.decode.input(self.past[0]).get_element_type().to_dtype()
        else:
            xml = manifest.model_file
            bin_ = listed(folder, manifest, xml.removesuffix(".xml") + ".bin")
            model = self.core.read_model(str(listed(folder, manifest, xml)), str(bin_))
            self.inputs = {p.get_any_name() for p in model.inputs}
            self.past = [p.get_any_name() for p in model.inputs if p.get_any_name().startswith("past_key_values")]
            if "beam_idx" not in self.inputs and not self.past:
                raise RuntimeError(f"{folder}: the IR has neither a state (beam_idx) nor past_key_values inputs")
            if self.past:
                shape = model.input(self.past[0]).get_partial_shape()
                self.kv_heads, self.head_dim = shape[1].get_length(), shape[3].get_length()
                self.kv_dtype = model.input(self.past[0]).get_element_type().to_dtype()
            if all_logits:  # a `logits_from` input: -1 gives the last position only (a prompt's prefill)
                self.inputs.add(_logits_from_input(model))
            else:
                _logits_of_last_position(model)
            self.compiled = self.core.compile_model(model, device, options)
            self.capacity = manifest.max_context

    def new_cache(self):
        if self.static:
            return self._static_cache()
        return StatelessCache(self) if self.past else StatefulCache(self)

    forward = staticmethod(forward_each)  # one call per sequence: the IRs here are batch 1

    def new_batch(self, rows: int) -> list:
        return [self.new_cache() for _ in range(rows)]

    def request(self, compiled):
        """A new infer request (remembered when profiling, for profile())."""
        request = compiled.create_infer_request()
        if self.profiling:
            self.requests.append(request)
        return request

    def profile(self, cache=None, top: int = 10) -> list[dict]:
        """Top operator types of the last call of each request made since load (OpenVINO's
        counters; load with profile)."""
        totals: dict[str, float] = {}
        for request in self.requests:
            for info in request.get_profiling_info():
                totals[info.node_type] = totals.get(info.node_type, 0.0) + info.real_time.total_seconds()
        return ranked(totals, top)

    def _static_cache(self) -> static_window.StaticWindowCache:
        import openvino as ov

        buffers = [{name: ov.Tensor(np.zeros(self.kv_shape, self.kv_dtype)) for name in self.past} for _ in range(2)]

        def runner():
            requests = {True: self.request(self.decode), False: self.request(self.prefill)}

            def run(decode: bool, feed: dict, past: dict, present: dict) -> np.ndarray:
                request = requests[decode]
                for name, tensor in past.items():
                    request.set_tensor(name, tensor)
                    request.set_tensor(name.replace("past_key_values", "present"), present[name])
                request.infer(feed, share_inputs=True)
                return request.get_tensor("logits").data[0]

            return run

        def copy(tensors: dict) -> dict:
            return {name: ov.Tensor(t.data.copy()) for name, t in tensors.items()}

        return static_window.StaticWindowCache(self.window, self.capacity, buffers, runner, copy)


def compile_cache(root, device: str, options: dict) -> str:
    """The CACHE_DIR for compiling with `options` on `device`: under `root` (None: the user cache,
    runtime/user_cache.py), one folder per device and compile properties. OpenVINO's cache key
    leaves some properties out: a blob compiled with INFERENCE_PRECISION_HINT=f32 was reused by a
    load without it and gave NaN logits (OpenVINO 2026.4, CPU; tests/test_engine.py keeps the case)."""
    import hashlib
    import json

    wanted = {k: str(v) for k, v in options.items() if k != "CACHE_DIR"}
    key = hashlib.sha256(json.dumps([device, wanted], sort_keys=True).encode()).hexdigest()[:16]
    return str(Path(root or user_cache.openvino_cache()) / key)


def _logits_of_last_position(model) -> None:
    """Feed the lm_head MatMul only the last position's hidden state (a Slice on axis 1)."""
    from openvino import opset8 as ops

    if _slice_before_lm_head(model, ops.constant(np.array([-1], np.int64))):
        model.validate_nodes_and_infer_types()


def _logits_from_input(model) -> str:
    """Feed the lm_head MatMul the hidden states from position `logits_from` on (a new int64[1]
    input; 0: every position, -1: the last). Checking guesses needs every position's logits, but
    the prompt's prefill only its last: projecting every prompt position onto a 151 k vocabulary
    cost prompt lookup on the 0.5B +0.3 s of TTFT and +290 MB (RESULTS.md, issue #18)."""
    from openvino import opset8 as ops

    start = ops.parameter([1], np.int64, name=LOGITS_FROM)
    start.output(0).get_tensor().set_names({LOGITS_FROM})
    if _slice_before_lm_head(model, start.output(0)):
        model.add_parameters([start])
        model.validate_nodes_and_infer_types()
        return LOGITS_FROM
    return ""


LOGITS_FROM = "logits_from"
FROM_FIRST, FROM_LAST = np.array([0], np.int64), np.array([-1], np.int64)


def _slice_before_lm_head(model, start) -> bool:
    from openvino import opset8 as ops

    result = next(
        r for r in model.get_results() if "logits" in r.output(0).get_names() or "logits" in r.get_friendly_name()
    )
    node = result.input_value(0).get_node()
    while node.get_type_name() != "MatMul":
        if node.get_input_size() == 0:
            log.info("no MatMul before the logits: every position's logits are computed")
            return False
        node = node.input_value(0).get_node()
    hidden = node.input_value(0)
    part = ops.slice(
        hidden,
        start,
        ops.constant(np.array([np.iinfo(np.int64).max], np.int64)),
        ops.constant(np.array([1], np.int64)),
        ops.constant(np.array([1], np.int64)),
    )
    node.input(0).replace_source_output(part.output(0))
    return True


class StatefulCache:
    """The KV cache inside one infer request's state."""

    def __init__(self, model: OpenVINOModel):
        self.model, self.request = model, model.request(model.compiled)
        self.inputs, self.capacity, self.length = model.inputs, model.capacity, 0
        size = self.capacity
        self.mask = np.ones((1, size), np.int64)
        self.positions = np.arange(size, dtype=np.int64)[None]
        self.beam = np.zeros(1, np.int32)

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:
        # Long prompts go in chunks: the attention and MLP intermediates of a 1024-token call cost
        # ~200 MB more peak memory than LLMPipeline (which splits prefill too), for no speed.
        ids, every = list(ids), self.model.all_logits and not last
        parts = [
            np.array(self._call(ids[s : s + PREFILL_CHUNK], every)[0], np.float32)
            for s in range(0, len(ids), PREFILL_CHUNK)
        ]
        return np.concatenate(parts) if every else parts[-1][-1]

    def _call(self, ids: list[int], every: bool):
        end = self.length + len(ids)
        if end > self.mask.shape[1]:
            self.mask = np.ones((1, 2 * end), np.int64)
            self.positions = np.arange(2 * end, dtype=np.int64)[None]
        feed = {
            "input_ids": np.asarray(ids, np.int64)[None],
            "attention_mask": self.mask[:, :end],
            "position_ids": self.positions[:, self.length : end],
            "beam_idx": self.beam,
            LOGITS_FROM: FROM_FIRST if every else FROM_LAST,
        }
        out = self.request.infer({k: v for k, v in feed.items() if k in self.inputs}, share_inputs=True)
        self.length = end
        return out["logits"]

    def trim(self, n: int) -> None:
        """Keep the first n positions (n = 0: a fresh conversation)."""
        import openvino as ov

        if n == 0:
            self.request.reset_state()
        elif n < self.length:
            for state in self.request.query_state():
                kept = state.state.data[:, :, :n].copy()  # a copy even when the slice is contiguous
                state.state = ov.Tensor(kept)
        self.length = min(self.length, n)

    def fork(self) -> StatefulCache:
        import openvino as ov

        other = StatefulCache(self.model)
        if self.length:
            mine = {state.name: state for state in self.request.query_state()}
            for state in other.request.query_state():
                state.state = ov.Tensor(mine[state.name].state.data[:, :, : self.length].copy())
        other.length = self.length
        return other


class StatelessCache:
    """The stateless IR (past_key_values in, present out): each call's present is the next past.
    The outputs are copied out of the request each call (the compatibility path: it costs a copy
    of the cache per token; the stateful IR keeps the cache inside the request)."""

    def __init__(self, model: OpenVINOModel):
        self.model, self.length = model, 0
        self.request = model.request(model.compiled)
        self.capacity = model.capacity
        self.trim(0)

    def append(self, ids: Sequence[int], last: bool = False) -> np.ndarray:
        end, every = self.length + len(ids), self.model.all_logits and not last
        feed = {
            "input_ids": np.asarray(ids, np.int64)[None],
            "attention_mask": np.ones((1, end), np.int64),
            "position_ids": np.arange(self.length, end, dtype=np.int64)[None],
            LOGITS_FROM: FROM_FIRST if every else FROM_LAST,
            **self.past,
        }
        out = self.request.infer({k: v for k, v in feed.items() if k in self.model.inputs})
        self.past = {name: out[name.replace("past_key_values", "present")] for name in self.model.past}
        self.length = end
        logits = out["logits"][0]
        return np.array(logits if every else logits[-1], np.float32)

    def fork(self) -> StatelessCache:
        other = StatelessCache(self.model)
        other.past = {k: np.array(v, copy=True) for k, v in self.past.items()}
        other.length = self.length
        return other

    def trim(self, n: int) -> None:
        if n == 0 or self.length == 0:
            m = self.model
            empty = np.zeros((1, m.kv_heads, 0, m.head_dim), m.kv_dtype)
            self.past = {name: empty for name in m.past}
        else:
            # a copy: with one KV head the slice is contiguous and would stay a view of the output
            self.past = {k: v[:, :, :n].copy() for k, v in self.past.items()}
        self.length = min(self.length, n)
