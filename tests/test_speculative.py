"""Prompt-lookup speculative decoding (runtime/speculative.py): greedy text identical to plain
decoding on every dynamic folder kind, guesses really checked and rolled back, and with sampling
the same output distribution (a statistical test on a tiny model)."""

import collections

import numpy as np
import pytest

from qwen_edge.runtime import Engine, EngineError
from qwen_edge.runtime.speculative import PromptLookup

REPEAT = [7, 8, 9, 10, 11, 12] * 4 + [7, 8]
PROMPT = [5, 17, 300, 2, 99, 41, 7, 8, 9, 10, 11]


def test_lookup_proposes_what_followed_the_latest_longest_match():
    look = PromptLookup(max_ngram=3)
    assert look.propose([1, 2, 3, 9, 1, 2, 3, 5, 6, 1, 2, 3], 2) == [5, 6]  # latest occurrence of 1 2 3
    assert look.propose([4, 5, 6, 4, 5], 3) == [6, 4, 5]
    assert look.propose([1, 2, 3], 4) == []  # nothing repeats
    assert PromptLookup(min_ngram=2).propose([1, 9, 2, 1], 2) == []  # a 1-gram match is not enough
    assert look.propose([1, 9, 8, 7, 1], 3) == [9]  # a 1-gram match guesses one token
    assert PromptLookup(one_token_draft=3).propose([1, 9, 8, 7, 1], 3) == [9, 8, 7]
    with pytest.raises(ValueError):
        PromptLookup(min_ngram=3, max_ngram=2)


@pytest.mark.parametrize("kind", ["ort", "portable", "openvino", "openvino-stateless"])
def test_greedy_text_is_plain_greedy_decoding(export_kinds, kind):
    _, tmp = export_kinds
    plain = Engine.load(tmp / kind)
    spec = Engine.load(tmp / kind, speculative=True)
    for n in (1, 9, 40):
        want = plain.generate(REPEAT, max_new_tokens=n, ignore_eos=True)
        got = spec.session().generate(REPEAT, max_new_tokens=n, ignore_eos=True, speculative=PromptLookup())
        assert got.token_ids == want.token_ids, (kind, n)
    assert got.stats.drafted > 0 and 0 < got.stats.accepted <= got.stats.drafted
    # the session's cache holds exactly the tokens it says: a follow-up reuses it and still agrees
    session = spec.session()
    first = session.generate(REPEAT, max_new_tokens=12, ignore_eos=True, speculative=PromptLookup())
    follow = REPEAT + first.token_ids + [20, 21]
    again = session.generate(follow, max_new_tokens=12, ignore_eos=True, speculative=PromptLookup(max_draft=3))
    assert again.token_ids == plain.generate(follow, max_new_tokens=12, ignore_eos=True).token_ids
    assert len(session.tokens) <= len(follow) + 12


def test_sampling_keeps_the_output_distribution(export_kinds):
    """Tokens 2 and 3 after a repetitive prompt (each may be a checked guess), 2000 seeds each way:
    the same marginals within sampling noise (total variation; ~0.02 expected from noise), while
    guesses were both accepted and refused (both branches of the rule ran)."""
    _, tmp = export_kinds
    spec = Engine.load(tmp / "ort", speculative=True)
    same_marginals(Engine.load(tmp / "ort"), spec, REPEAT, 2000, 0.07, speculative=PromptLookup())


def same_marginals(plain, spec, prompt, runs, limit, **extra):
    """Tokens 2 and 3 from `runs` seeds, plain against speculative: total variation under `limit`,
    and guesses both kept and refused."""
    options = dict(max_new_tokens=3, temperature=1.5, top_k=4, ignore_eos=True)
    a = [collections.Counter(), collections.Counter()]
    b = [collections.Counter(), collections.Counter()]
    drafted = accepted = 0
    for seed in range(runs):
        for i, t in enumerate(plain.generate(prompt, seed=seed, **options).token_ids[1:]):
            a[i][t] += 1
        r = spec.session().generate(prompt, seed=seed, **options, **extra)
        for i, t in enumerate(r.token_ids[1:]):
            b[i][t] += 1
        drafted, accepted = drafted + r.stats.drafted, accepted + r.stats.accepted
    assert 0 < accepted < drafted
    for x, y in zip(a, b, strict=True):
        tv = 0.5 * sum(abs(x[k] - y[k]) for k in set(x) | set(y)) / runs
        assert tv < limit, (tv, x.most_common(5), y.most_common(5))


def test_lookup_needs_an_engine_that_returns_every_position(export_kinds):
    _, tmp = export_kinds
    with pytest.raises(EngineError, match="speculative=True"):
        Engine.load(tmp / "ort").generate(REPEAT, max_new_tokens=2, speculative=PromptLookup())
    assert np.isfinite(Engine.load(tmp / "ort", speculative=True).generate(REPEAT, max_new_tokens=2).stats.ttft_s)


def test_cli_prompt_lookup_gives_the_same_text(export_kinds, capsys):
    import json

    from qwen_edge.cli.main import main

    _, tmp = export_kinds
    base = ["generate", str(tmp / "ort"), "-p", "abc abc abc abc abc", "--max-new-tokens", "16", "--ignore-eos"]
    base.append("--json")
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--prompt-lookup"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert fast["token_ids"] == plain["token_ids"] and "drafted" in fast["stats"]


class _FixedModel:
    """A 'model' whose next-token distribution is always p: guesses are made (the context repeats)
    and judged against a known answer."""

    def __init__(self, logits):
        self.logits, self.length = np.asarray(logits, np.float64), 0

    def _rows(self, ids):
        self.length += len(ids)
        return np.tile(self.logits, (len(ids), 1))

    prefill = extend = _rows

    def trim(self, n):
        self.length = min(self.length, n)


def test_the_acceptance_rule_samples_exactly_p():
    """Every token after the first must be drawn from p whether it came as a kept guess or after a
    refusal (the residual): 4000 runs, each position's frequencies within noise of p."""
    from qwen_edge.runtime import speculative
    from qwen_edge.runtime.generate import Sampling

    p = np.array([0.45, 0.3, 0.15, 0.1])
    counts = np.zeros((3, 4))
    drafted = accepted = 0
    for seed in range(4000):
        s = Sampling(max_new_tokens=4, temperature=1.0, seed=seed, ignore_eos=True)
        stats = speculative.Stats()
        out = list(speculative.generate(_FixedModel(np.log(p)), [0, 1, 2, 3] * 3, s, PromptLookup(), stats=stats))
        for i, t in enumerate(out[1:]):
            counts[i, t] += 1
        drafted, accepted = drafted + stats.drafted, accepted + stats.accepted
    assert drafted > 4000 and 0 < accepted < drafted
    for row in counts:
        assert np.abs(row / row.sum() - p).max() < 0.03, row / row.sum()


@pytest.fixture(scope="module")
def drafts(export_kinds, tmp_path_factory):
    """Draft folders for the tiny target: the target's own weights as an `ort` folder (guesses
    nearly always right) and another random model of the same vocabulary (often wrong)."""
    from qwen_edge.export.to_onnx import export_onnx
    from qwen_edge.models.shapes import random_model

    from .cache_env import cache_at
    from .gguf_writer import write_gguf

    _, tmp = export_kinds
    out = tmp_path_factory.mktemp("drafts")
    with cache_at(str(out / "cache")):
        export_onnx(str(tmp / "m.gguf"), out / "same")
        other = write_gguf(random_model("tiny", seed=9, std=0.1), out / "other.gguf")
        export_onnx(str(other), out / "other")
    return out


@pytest.mark.parametrize("kind", ["ort", "portable", "openvino", "openvino-stateless"])
def test_a_draft_model_gives_plain_greedy_text(export_kinds, drafts, kind):
    _, tmp = export_kinds
    # OpenVINO at f32: at its default bf16, checking several tokens in one forward rounds
    # differently from one at a time, and near-tied argmaxes flip
    exact = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"} if "openvino" in kind else None
    plain = Engine.load(tmp / kind, config=exact)
    for draft, agree in (("same", True), ("other", False)):
        engine = Engine.load(tmp / kind, config=exact, draft=drafts / draft, draft_confidence=0.0)
        session = engine.session()
        for n in (1, 9, 40):
            want = plain.generate(PROMPT, max_new_tokens=n, ignore_eos=True)
            got = session.generate(PROMPT, max_new_tokens=n, ignore_eos=True)
            assert got.token_ids == want.token_ids, (kind, draft, n)
        assert got.stats.drafted > 0
        if agree:  # the same weights guess the target's own argmax (ties aside)
            assert got.stats.accepted >= 0.9 * got.stats.drafted
        else:
            assert got.stats.accepted < got.stats.drafted
        # a follow-up in the same session: both caches are reused and trimmed, the text still agrees
        follow = PROMPT + got.token_ids[:5] + [20, 21]
        again = session.generate(follow, max_new_tokens=12, ignore_eos=True)
        assert again.token_ids == plain.generate(follow, max_new_tokens=12, ignore_eos=True).token_ids


def test_a_target_and_its_draft_run_without_spinning_threads(export_kinds, drafts):
    """Two ONNX Runtime sessions taking turns must not leave spinning threads on each other's
    cores (engine.TAKING_TURNS); a model alone keeps ONNX Runtime's default, which is faster alone."""
    _, tmp = export_kinds
    key = "session.intra_op.allow_spinning"

    def spinning(engine):
        return engine.model.session.get_session_options().get_session_config_entry(key)

    engine = Engine.load(tmp / "ort", draft=drafts / "other")
    assert spinning(engine) == "0" and spinning(engine.draft) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: the default, spinning
        spinning(Engine.load(tmp / "ort"))


def test_a_draft_model_keeps_the_sampling_distribution(export_kinds, drafts):
    """As for prompt lookup: tokens 2 and 3, 1500 seeds each way, total variation within noise,
    guesses both kept and refused."""
    _, tmp = export_kinds
    engine = Engine.load(tmp / "ort", draft=drafts / "same", draft_confidence=0.0)  # tiny models are never sure
    same_marginals(Engine.load(tmp / "ort"), engine, PROMPT, 1500, 0.08)


def test_a_draft_with_another_vocabulary_is_refused(export_kinds, tmp_path):
    import json
    import shutil

    _, tmp = export_kinds
    odd = tmp_path / "odd"
    shutil.copytree(tmp / "ort", odd)
    spec = json.loads((odd / "tokenizer.json").read_text())
    spec["added_tokens"].append({**spec["added_tokens"][-1], "id": 9999, "content": "<|odd|>"})
    (odd / "tokenizer.json").write_text(json.dumps(spec))
    draft = Engine.load(odd, verify=False)
    with pytest.raises(EngineError, match="does not share .* tokenizer"):
        Engine.load(tmp / "ort", draft=draft)


def test_cli_draft_gives_the_same_text(export_kinds, drafts, capsys):
    import json

    from qwen_edge.cli.main import main

    _, tmp = export_kinds
    base = ["generate", str(tmp / "openvino"), "-p", "hello there", "--max-new-tokens", "16", "--ignore-eos", "--json"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--draft", str(drafts / "other"), "--draft-confidence", "0"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert fast["token_ids"] == plain["token_ids"] and fast["stats"]["drafted"] > 0
    assert main([*base, "--draft", str(drafts / "other"), "--prompt-lookup"]) == 2
    assert "give one" in capsys.readouterr().err
    assert main([*base, "--draft-confidence", "0.5"]) == 2 and "needs --draft" in capsys.readouterr().err


def test_an_unsure_draft_guesses_less_and_the_text_is_the_same(export_kinds, drafts):
    from qwen_edge.runtime.speculative import DraftModel

    _, tmp = export_kinds
    engine = Engine.load(tmp / "ort", draft=drafts / "other")
    want = Engine.load(tmp / "ort").generate(PROMPT, max_new_tokens=30, ignore_eos=True).token_ids
    counts = []
    for confidence in (0.0, 0.9):
        spec = DraftModel(engine.draft.model, min_confidence=confidence)
        r = engine.session().generate(PROMPT, max_new_tokens=30, ignore_eos=True, speculative=spec)
        assert r.token_ids == want
        counts.append(r.stats.drafted)
    assert counts[1] < counts[0]
    with pytest.raises(ValueError, match="min_confidence"):
        DraftModel(engine.draft.model, min_confidence=1.0)
