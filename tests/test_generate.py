"""The backend-agnostic generation loop and sampler."""

import time

import numpy as np
import pytest
import torch

from qwen_edge.models.reference import TorchStep
from qwen_edge.models.shapes import random_model
from qwen_edge.runtime.generate import Sampling, Stats, generate, probabilities, sample


class ScriptedStep:
    """Logits that put all mass on a scripted sequence of tokens."""

    def __init__(self, script, vocab=10, delays=(0.0, 0.0)):
        self.script, self.vocab, self.i, self.seen = script, vocab, 0, []
        self.delays = delays  # seconds a prefill and a decode take

    def _next(self):
        logits = np.zeros(self.vocab, dtype=np.float32)
        logits[self.script[min(self.i, len(self.script) - 1)]] = 10.0
        self.i += 1
        return logits

    def prefill(self, ids):
        self.seen.append(list(ids))
        time.sleep(self.delays[0])
        return self._next()

    def decode(self, token):
        self.seen.append([token])
        time.sleep(self.delays[1])
        return self._next()


def test_greedy_follows_logits_and_stops_on_eos():
    step, stats = ScriptedStep([3, 4, 5, 9, 6], delays=(0.05, 0.02)), Stats()
    out = list(generate(step, [1, 2], Sampling(max_new_tokens=10), eos_ids=(9,), stats=stats))
    assert out == [3, 4, 5]
    assert step.seen == [[1, 2], [3], [4], [5]]  # each new token fed back exactly once
    assert stats.prompt_tokens == 2 and stats.new_tokens == 3
    # the clock brackets the work: TTFT holds the prefill, the rest at least the 2 decodes between outputs
    assert 0.05 <= stats.ttft_s and stats.total_s - stats.ttft_s >= 2 * 0.02
    assert stats.decode_tokens_per_s == pytest.approx(2 / (stats.total_s - stats.ttft_s))


def test_max_tokens_and_ignore_eos():
    out = list(generate(ScriptedStep([9, 9, 9]), [1], Sampling(max_new_tokens=2, ignore_eos=True), eos_ids=(9,)))
    assert out == [9, 9]


def test_seeded_sampling_is_reproducible_and_varies_with_seed():
    logits = np.log(np.array([0.3, 0.3, 0.2, 0.2]))
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = [sample(logits, Sampling(temperature=1.0), rng_a) for _ in range(50)]
    b = [sample(logits, Sampling(temperature=1.0), rng_b) for _ in range(50)]
    assert a == b and len(set(a)) > 1


def test_top_k_and_top_p_cut_the_tail():
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.1]))
    rng = np.random.default_rng(0)
    assert {sample(logits, Sampling(temperature=1.0, top_k=2), rng) for _ in range(300)} == {0, 1}
    assert {sample(logits, Sampling(temperature=1.0, top_p=0.7), rng) for _ in range(300)} == {0, 1}
    assert {sample(logits, Sampling(temperature=1.0, top_p=0.4), rng) for _ in range(100)} == {0}
    assert sample(logits, Sampling(temperature=0.0), rng) == 0


def test_torch_reference_step_matches_full_forward():
    model = random_model("tiny", seed=2)
    prompt = [5, 9, 40, 7]
    out = list(generate(TorchStep(model), prompt, Sampling(max_new_tokens=6)))
    ids = torch.tensor([prompt + out])
    with torch.no_grad():
        full = model(ids, torch.arange(ids.shape[1])[None], torch.ones_like(ids), model.empty_cache(1))[0]
    assert out == full[0, len(prompt) - 1 : -1].argmax(-1).tolist()


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_temperature_sharpens_or_flattens(temperature):
    # On the distribution itself (a sampling share cannot tell T=1.3 from T=1 within its noise).
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    expected = np.array([0.6, 0.3, 0.1]) ** (1 / temperature)
    p = probabilities(logits, Sampling(temperature=temperature))
    assert np.allclose(p, expected / expected.sum(), atol=1e-12)
    assert not np.allclose(p, [0.6, 0.3, 0.1], atol=1e-3)
    rng = np.random.default_rng(1)  # and the draws follow it
    share = np.mean([sample(logits, Sampling(temperature=temperature), rng) == 0 for _ in range(4000)])
    assert abs(share - p[0]) < 0.03


def test_min_p_drops_tokens_below_a_share_of_the_top():
    logits = np.log(np.array([0.5, 0.3, 0.12, 0.08]))
    rng = np.random.default_rng(0)
    # min_p 0.2: keep p >= 0.1 (tokens 0, 1, 2), renormalized
    draws = [sample(logits, Sampling(temperature=1.0, min_p=0.2), rng) for _ in range(4000)]
    assert set(draws) == {0, 1, 2}
    assert abs(np.mean(np.array(draws) == 2) - 0.12 / 0.92) < 0.02


def test_penalties_change_logits_as_defined():
    from qwen_edge.runtime.generate import penalize

    logits = np.array([2.0, -1.0, 0.5, 3.0], np.float32)
    out = penalize(logits, Sampling(repetition_penalty=2.0), seen=np.array([0, 1, 1]), output=np.array([], np.int64))
    assert out.tolist() == [1.0, -2.0, 0.5, 3.0]  # positive / p, negative * p, each id once
    out = penalize(logits, Sampling(presence_penalty=0.5), seen=np.array([3]), output=np.array([3, 3, 2]))
    assert out.tolist() == [2.0, -1.0, 0.0, 2.5]  # output ids only, once each
    assert penalize(logits, Sampling(), np.array([0]), np.array([0])) is logits


def test_repetition_penalty_breaks_a_greedy_loop():
    step = ScriptedStep([3, 3, 3, 3, 3], vocab=6)
    step._next = lambda: np.array([0, 0, 1.0, 2.0, 0, 0], np.float32)  # 3 best, then 2
    plain = list(generate(step, [1], Sampling(max_new_tokens=3)))
    penalized = list(generate(step, [1], Sampling(max_new_tokens=3, repetition_penalty=3.0)))
    # 3 -> 2/3 < 1: 2 wins; then both were seen: 2/3 > 1/3, 3 again
    assert plain == [3, 3, 3] and penalized == [3, 2, 3]


def test_bad_sampling_values_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="top_p must be in"):
        Sampling(top_p=0)
    with pytest.raises(ValueError, match=r"temperature must be 0 \(greedy\) or between"):
        Sampling(temperature=-1)
