"""OpenVINO behind the prefill / decode interface: the stateful IR, batch 1, one reused infer
request whose state (the KV cache) is reset at each prefill.

For dynamic OpenVINO export folders (and quantized ones). The folder is verified against its
manifest first. `config` passes straight to compile_model (e.g. INFERENCE_PRECISION_HINT).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .manifest import ManifestError, verify


class OpenVINOStep:
    def __init__(self, folder: str | Path, device: str = "CPU", threads: int | None = None, config: dict | None = None):
        import openvino as ov

        manifest = verify(folder)
        if manifest.get("format") != "openvino" or manifest.get("graph") == "static":
            raise ManifestError(f"{folder}: OpenVINOStep runs dynamic OpenVINO folders, not {manifest.get('graph')}")
        core = ov.Core()
        model = core.read_model(str(Path(folder) / "openvino_model.xml"))
        self.inputs = {p.get_any_name() for p in model.inputs}
        if "beam_idx" not in self.inputs:
            raise ManifestError(f"{folder}: the IR is not stateful (no beam_idx input); re-export it")
        config = dict(config or {}, **({"INFERENCE_NUM_THREADS": threads} if threads else {}))
        self.request = core.compile_model(model, device, config).create_infer_request()
        self.length = 0

    def _run(self, ids: Sequence[int]) -> np.ndarray:
        n = len(ids)
        feed = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, self.length + n), np.int64),
            "position_ids": np.arange(self.length, self.length + n, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, np.int32),
        }
        logits = self.request.infer({k: v for k, v in feed.items() if k in self.inputs})["logits"]
        self.length += n
        return logits[0, -1].astype(np.float32)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.request.reset_state()
        self.length = 0
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._run([token])
