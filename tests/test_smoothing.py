"""quantize/smoothing.py moves activation ranges into the weights without changing what the model
computes: logits equal before and after, for dense, tied and MoE models."""

import copy

import numpy as np
import pytest

from qwen_edge.models.shapes import random_model
from qwen_edge.quantize import smoothing

from .onnx_driver import torch_logits


@pytest.mark.parametrize("shape", ["tiny", "tiny-untied", "tiny-moe"])
def test_smoothing_keeps_the_function(shape):
    model = random_model(shape, seed=2, std=0.1)
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, model.config.vocab_size, 24).tolist() for _ in range(3)]
    ids = rng.integers(0, model.config.vocab_size, (1, 12))
    before = torch_logits(model, ids)
    smoothed = copy.deepcopy(model)
    maxima = smoothing.activation_maxima(smoothed, windows)
    smoothing.smooth(smoothed, maxima)
    smoothing.smooth_head(smoothed, maxima)
    assert np.abs(torch_logits(smoothed, ids) - before).max() < 1e-4
    norm = smoothed.model.layers[0].input_layernorm.weight
    assert not np.allclose(norm.detach().numpy(), model.model.layers[0].input_layernorm.weight.detach().numpy())
    assert smoothed.lm_head.weight is not smoothed.model.embed_tokens.weight and not smoothed.config.tie_word_embeddings
