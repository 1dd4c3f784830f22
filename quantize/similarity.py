"""Generation similarity: greedy continuations of a fixed prompt set by a compressed folder and
its reference, compared token by token (in the spirit of OpenVINO's who-what-benchmark, which
compares the texts with a sentence-embedding model; none is available offline, and tokens are
the stricter test).

    similarity   mean over prompts of difflib's ratio of the two token sequences: 2 * matched / total
    identical    share of prompts whose continuations are the same tokens
    prefix       mean share of the reference continuation reproduced before the first difference

Both run greedy in f32 with an f32 KV cache (OpenVINO), as the perplexity does.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from tqdm import tqdm

from qwen_edge.runtime.generate import Sampling, generate
from qwen_edge.runtime.tokenizer import Tokenizer

# Written for this project: code, prose, facts, instructions and a non-English line, as a coder
# chat model meets them.
PROMPTS = (
    "def fibonacci(n):\n",
    "import numpy as np\n\n# Compute the moving average of an array\ndef moving_average(x, window):\n",
    "The capital of France is",
    "Here are three tips for writing readable code:\n1.",
    "SELECT name, COUNT(*) FROM orders",
    "The river flooded the valley in the spring, and the farmers",
    "Q: What is the time complexity of binary search?\nA:",
    "快速排序的基本思想是",
)


def continuations(folder: str | Path, prompts=PROMPTS, max_new_tokens: int = 32) -> list[list[int]]:
    """Greedy token ids after each prompt (stopping at the folder's EOS ids)."""
    tokenizer, step = Tokenizer(folder), _step(folder)
    greedy = Sampling(max_new_tokens=max_new_tokens)
    return [
        list(generate(step, tokenizer.encode(p), greedy, eos_ids=tokenizer.eos_token_ids))
        for p in tqdm(prompts, desc=f"generate {Path(folder).name}", leave=False, disable=None)
    ]


def compare(candidate: list[list[int]], reference: list[list[int]]) -> dict:
    ratios, prefixes = [], []
    for a, b in zip(candidate, reference, strict=True):
        ratios.append(difflib.SequenceMatcher(None, b, a, autojunk=False).ratio() if a or b else 1.0)
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        prefixes.append(same / len(b) if b else float(not a))
    n = len(ratios)
    return {
        "prompts": n,
        "similarity": sum(ratios) / n,
        "identical": sum(a == b for a, b in zip(candidate, reference, strict=True)) / n,
        "prefix": sum(prefixes) / n,
    }


def _step(folder: str | Path):
    """The runtime's backend on `folder` (OpenVINO in f32); an OpenVINO folder without a manifest
    (optimum-cli's) is read as a stateful IR."""
    from qwen_edge.runtime import backend
    from qwen_edge.runtime.engine import CacheStep

    return CacheStep(backend.load(folder, exact=True).new_cache())
