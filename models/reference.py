"""Our torch model behind the runtime's prefill / decode interface: the reference that every
exported graph and backend is checked against, and what the demo runs before export exists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .qwen2 import Qwen2ForCausalLM


class TorchStep:
    """Batch 1, dynamic KV cache. Logits come back as float32 numpy over the vocabulary."""

    def __init__(self, model: Qwen2ForCausalLM):
        self.model = model
        self.cache, self.length = None, 0

    @torch.inference_mode()
    def _run(self, ids: Sequence[int]) -> np.ndarray:
        t = len(ids)
        input_ids = torch.tensor([list(ids)], dtype=torch.long)
        position_ids = torch.arange(self.length, self.length + t)[None]
        mask = torch.ones(1, self.length + t, dtype=torch.long)
        logits, self.cache = self.model(input_ids, position_ids, mask, self.cache)
        self.length += t
        return logits[0, -1].float().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.cache, self.length = self.model.empty_cache(1), 0
        return self._run(ids)

    def decode(self, token: int) -> np.ndarray:
        return self._run([token])
