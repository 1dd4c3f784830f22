"""Plain ONNX Runtime behind the prefill / decode interface: batch 1, the graph grows the KV cache.

For `ort` and `portable` export folders. The folder is verified against its manifest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .manifest import ManifestError, verify


class OnnxStep:
    def __init__(self, folder: str | Path, threads: int | None = None):
        import onnxruntime as ort

        manifest = verify(folder)
        if manifest.get("format") != "onnx" or manifest.get("graph") == "static":
            raise ManifestError(f"{folder}: OnnxStep runs ort and portable ONNX folders, not {manifest.get('graph')}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        path = str(Path(folder) / manifest["model_file"])
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        cfg = manifest["config"]
        self.empty = np.zeros(
            (1, cfg["num_key_value_heads"], 0, cfg["head_dim"]),
            np.float16 if "float16" in inputs[self.past_names[0]].type else np.float32,
        )
        self.with_positions = "position_ids" in inputs
        self.past, self.length = {}, 0

    def _run(self, ids: Sequence[int]) -> np.ndarray:
        n = len(ids)
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, self.length + n), np.int64)}
        if self.with_positions:
            feed["position_ids"] = np.arange(self.length, self.length + n, dtype=np.int64)[None]
        logits, *present = self.session.run(None, {**feed, **self.past})
        self.past = dict(zip(self.past_names, present, strict=True))
        self.length += n
        return logits[0, -1].astype(np.float32)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.past, self.length = {name: self.empty for name in self.past_names}, 0
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._run([token])
