"""A weight already quantized, as the graph builders lay it out (OpenVINO constants or ONNX
Runtime's MatMulNBits / GatherBlockQuantized). Export never decides how to quantize: it is handed
a `Quantizer` (qwen_edge.quantize.streamed builds them from recipes) and writes what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class QuantizedWeight:
    """A [out, in] weight as integers: `values` [out, groups, group] (grouped) or [out, in] (one
    scale per output channel); uint8 with a `zero_point` (asymmetric) or int8 without (symmetric);
    `scale` float32 and `zero_point` shaped [out, groups, 1] or [out, 1]; w ~ (values - zp) * scale."""

    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    bits: int

    @property
    def group(self) -> int:
        return self.values.shape[-1] if self.values.ndim == 3 else -1


# (weight name, [out, in] tensor) -> its quantized form, or None to keep it float
Quantizer = Callable[[str, torch.Tensor], QuantizedWeight | None]


def quantized_info(recipe: dict | None) -> dict:
    """The manifest's record of weights quantized while exporting (as `qwen-edge quantize` records
    its own): the recipe that ran and the NNCF whose numerics made them."""
    if recipe is None:
        return {}
    from importlib import metadata

    return {"recipe": recipe, "nncf": metadata.version("nncf"), "quantized_while_exporting": True}
