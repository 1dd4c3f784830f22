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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qwen_edge.runtime.manifest import read
from qwen_edge.runtime.tokenizer import Tokenizer

from .calibration import read_text

log = logging.getLogger(__name__)

EXACT = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}


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
    """Logits of every position of a token window from an export folder: OpenVINO IR (stateful or
    not) on OpenVINO's CPU device, or the ONNX `ort` / `portable` graph on ONNX Runtime's CPU."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        folder = Path(folder)
        manifest = read(folder) if (folder / "manifest.json").exists() else {"format": "openvino"}
        if manifest.get("graph") == "static":
            raise EvaluationError(f"{folder} is a static (NPU) export; evaluate the dynamic export it was made from")
        self.onnx = manifest.get("format") == "onnx"
        if self.onnx:
            self._load_onnx(folder / manifest["model_file"], threads)
        else:
            self._load_openvino(folder / "openvino_model.xml", threads)

    def _load_openvino(self, xml: Path, threads: int | None) -> None:
        import openvino as ov

        if not xml.exists():
            raise EvaluationError(f"{xml.parent} has no openvino_model.xml: is it an OpenVINO export folder?")
        config = dict(EXACT, **({"INFERENCE_NUM_THREADS": threads} if threads else {}))
        model = ov.Core().read_model(str(xml))
        self.inputs = {p.get_any_name() for p in model.inputs}
        self.request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        self.past = {
            p.get_any_name(): (p.get_partial_shape()[1].get_length(), p.get_partial_shape()[3].get_length(), np.float32)
            for p in model.inputs
            if p.get_any_name().startswith("past_key")
        }

    def _load_onnx(self, path: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.past = {
            i.name: (i.shape[1], i.shape[3], np.float16 if "float16" in i.type else np.float32)
            for i in self.session.get_inputs()
            if i.name.startswith("past_key")
        }

    def __call__(self, ids: list[int]) -> np.ndarray:
        n = len(ids)
        feed = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, n), np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None],
            "beam_idx": np.zeros(1, np.int32),
        }
        for name, (heads, dim, dtype) in self.past.items():  # explicit KV inputs: an empty cache
            feed[name] = np.zeros([1, heads, 0, dim], dtype)
        feed = {k: v for k, v in feed.items() if k in self.inputs}
        if self.onnx:
            return self.session.run(["logits"], feed)[0][0].astype(np.float32)
        if "beam_idx" in self.inputs:
            self.request.reset_state()
        return self.request.infer(feed)["logits"][0]


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
    candidate = WindowLogits(folder)
    ref = WindowLogits(reference) if reference else None
    nll, ref_nll, agree, kl, count = 0.0, 0.0, 0, 0.0, 0
    for chunk in tqdm(chunks, desc="evaluate", leave=False, disable=None):
        targets = np.array(chunk[1:])
        logp = log_softmax(candidate(chunk)[:-1])
        nll -= logp[np.arange(len(targets)), targets].sum()
        if ref is not None:
            ref_logp = log_softmax(ref(chunk)[:-1])
            ref_nll -= ref_logp[np.arange(len(targets)), targets].sum()
            agree += int((ref_logp.argmax(-1) == logp.argmax(-1)).sum())
            kl += float((np.exp(ref_logp) * (ref_logp - logp)).sum())
        count += len(targets)
    scores = Scores(source, len(chunks), window_tokens, float(np.exp(nll / count)))
    if ref is not None:
        scores.reference_perplexity = float(np.exp(ref_nll / count))
        scores.perplexity_increase = scores.perplexity / scores.reference_perplexity - 1
        scores.top1_agreement = agree / count
        scores.mean_kl = kl / count
        if generation_tokens > 0:
            from . import similarity

            del candidate, ref  # one model pair in memory at a time
            cache = reference_continuations if reference_continuations is not None else {}
            key = (str(Path(reference).resolve()), generation_tokens)
            if key not in cache:
                cache[key] = similarity.continuations(reference, max_new_tokens=generation_tokens)
            mine = similarity.continuations(folder, max_new_tokens=generation_tokens)
            scores.generation = similarity.compare(mine, cache[key])
    return scores
