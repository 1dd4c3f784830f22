"""The family's shapes reproduce the released models' sizes."""

import pytest

from qwen_edge.models.shapes import SHAPES, count_parameters, random_model, shape_config

# Parameter counts as published on the model cards (billions, rounded as they are there).
PUBLISHED = {
    "Qwen2-0.5B": 0.49,
    "Qwen2-1.5B": 1.54,
    "Qwen2-7B": 7.62,
    "Qwen2-72B": 72.71,
    "Qwen2-57B-A14B": 57.41,
    "Qwen2.5-3B": 3.09,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shape_has_the_published_parameter_count(name):
    assert round(count_parameters(shape_config(name)) / 1e9, 2) == PUBLISHED[name]


def test_every_shape_builds_a_config_and_tiny_ones_a_model():
    for name in SHAPES:
        cfg = shape_config(name)
        assert cfg.hidden_size == cfg.head_dim * cfg.num_attention_heads
    model = random_model("tiny-gqa3", seed=0)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)


def test_unknown_shape_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown shape 'Qwen9'.*Qwen2-0.5B"):
        shape_config("Qwen9")
