"""How much a compressed model lost: perplexity on a text, and next-token agreement with a reference.

Both models see the same windows of the text, one full window per call (the stateful IR's state
reset in between); OpenVINO computes in f32 with an f32 KV cache, so the numbers measure the
weights and not the CPU's bf16 arithmetic. ONNX folders run on ONNX Runtime's CPU provider as
they are (a MatMulNBits graph's int8 compute included: that is what it ships with). For each window of L tokens:

    perplexity   exp(mean negative log-likelihood of tokens 2..L)
    top-1        share of positions where both models' most likely next token is the same
    KL           mean over positions of KL(reference || candidate) on the next-token distribution

and, against a reference, the generation similarity of greedy continuations (`similarity.py`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qwen_edge.runtime import backend
from qwen_edge.runtime.manifest import ManifestError
from qwen_edge.runtime.tokenizer import Tokenizer

from .calibration import read_text

log = logging.getLogger(__name__)


WINDOW_TOKENS = 512


class EvaluationError(ValueError):
    """The folders or the text cannot be evaluated as asked."""


@dataclass
class Scores:
    text: str
    windows: int
    window_tokens: int
    perplexity: float
    reference_perplexity: float | None = None
    perplexity_increase: float | None = None  # relative: 0.05 is +5%
    top1_agreement: float | None = None
    mean_kl: float | None = None
    generation: dict | None = None  # similarity.compare of greedy continuations, with a reference

    def to_dict(self) -> dict:
        return asdict(self)


class WindowLogits:
    """Logits of every position of a token window from an export folder, through the runtime's
    backend (OpenVINO in f32 with an f32 KV cache, so the scores measure the weights, not the
    CPU's bf16; ONNX Runtime on the `ort` / `portable` graph)."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        try:
            self.backend = backend.load(folder, threads=threads, all_logits=True, exact=True)
        except ManifestError as e:
            raise EvaluationError(f"{e} (evaluate reads qwen-edge export folders, or an OpenVINO IR folder)") from None
        if self.backend.manifest.graph == "static":
            raise EvaluationError(f"{folder} is a static (NPU) export; evaluate the dynamic export it was made from")
        self.cache = self.backend.new_cache()

    def __call__(self, ids: list[int]) -> np.ndarray:
        self.cache.trim(0)
        return self.cache.append(ids)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def evaluate(
    folder: str | Path,
    reference: str | Path | None = None,
    text: str | Path | None = None,
    windows: int = 4,
    window_tokens: int = WINDOW_TOKENS,
    generation_tokens: int = 32,
    reference_continuations: dict | None = None,
    text_flag: str = "--text",
) -> Scores:
    """Scores of `folder` on `windows` windows of `text` (default: the built-in sample), against
    `reference` (another export folder of the same model) when given: then also the similarity of
    `generation_tokens` greedy tokens after each fixed prompt (0: skipped). The reference's
    continuations are kept in `reference_continuations` (a dict) when given, for the next call."""
    if windows < 1 or window_tokens < 2:
        raise EvaluationError(
            f"--windows ({windows}) must be at least 1 and --window-tokens ({window_tokens}) at least 2"
        )
    body, source = read_text(text, text_flag)
    tokens = Tokenizer(folder).encode(body)
    chunks = [tokens[i : i + window_tokens] for i in range(0, len(tokens) - window_tokens + 1, window_tokens)][:windows]
    if not chunks:
        raise EvaluationError(
            f"{source} has {len(tokens)} tokens, fewer than one window of {window_tokens}: "
            + (
                "give a longer text or a smaller --window-tokens"
                if text_flag == "--text"
                else f"give a longer {text_flag}"
            )
        )
    # One model in memory at a time (a 1.5B fp16 reference compiled for f32 is ~6.5 GB): the
    # reference's logits (float32, as the runtime returns them) go to a temporary file per window,
    # then the candidate runs.
    nll, ref_nll, agree, kl, count = 0.0, 0.0, 0, 0.0, 0
    with tempfile.TemporaryDirectory(prefix="qwen-edge-eval-") as spill:
        if reference:
            ref = WindowLogits(reference)
            for i, chunk in enumerate(tqdm(chunks, desc="evaluate reference", leave=False, disable=None)):
                np.save(Path(spill) / f"{i}.npy", ref(chunk)[:-1])
            del ref
        candidate = WindowLogits(folder)
        for i, chunk in enumerate(tqdm(chunks, desc="evaluate", leave=False, disable=None)):
            targets = np.array(chunk[1:])
            logp = log_softmax(candidate(chunk)[:-1])
            nll -= logp[np.arange(len(targets)), targets].sum()
            if reference:
                ref_logp = log_softmax(np.load(Path(spill) / f"{i}.npy"))
                ref_nll -= ref_logp[np.arange(len(targets)), targets].sum()
                agree += int((ref_logp.argmax(-1) == logp.argmax(-1)).sum())
                kl += float((np.exp(ref_logp) * (ref_logp - logp)).sum())
            count += len(targets)
        del candidate
    scores = Scores(source, len(chunks), window_tokens, float(np.exp(nll / count)))
    if reference:
        scores.reference_perplexity = float(np.exp(ref_nll / count))
        scores.perplexity_increase = scores.perplexity / scores.reference_perplexity - 1
        scores.top1_agreement = agree / count
        scores.mean_kl = kl / count
        if generation_tokens > 0:
            from . import similarity

            cache = reference_continuations if reference_continuations is not None else {}
            key = (str(Path(reference).resolve()), generation_tokens)
            if key not in cache:
                cache[key] = similarity.continuations(reference, max_new_tokens=generation_tokens)
            mine = similarity.continuations(folder, max_new_tokens=generation_tokens)
            scores.generation = similarity.compare(mine, cache[key])
    return scores
