"""Evaluate an export folder (OpenVINO or ONNX): perplexity on a text, and agreement with a reference.

Perplexity over windows of the text; with --reference, the share of positions where both models
pick the same next token (top-1), the mean KL divergence of the next-token distributions, and the
similarity of greedy continuations of a fixed prompt set.
"""

from __future__ import annotations


def configure_parser(p) -> None:
    p.add_argument("folder", help="an OpenVINO or ONNX export folder")
    p.add_argument("--reference", help="another export folder of the same model (e.g. the fp16 export)")
    p.add_argument("--text", help="text file (default: a built-in sample); e.g. WikiText-2's wiki.test.raw")
    p.add_argument("--windows", type=int, default=4, help="windows of the text to read")
    p.add_argument("--window-tokens", type=int, default=512, help="tokens per window")
    p.add_argument(
        "--generation-tokens", type=int, default=32, help="greedy tokens per fixed prompt for the similarity (0: skip)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def print_scores(scores: dict) -> None:
    rows = [("text", scores["text"]), ("windows", f"{scores['windows']} x {scores['window_tokens']} tokens")]
    rows.append(("perplexity", f"{scores['perplexity']:.3f}"))
    if scores.get("reference_perplexity") is not None:
        rows += [
            ("reference perplexity", f"{scores['reference_perplexity']:.3f}"),
            ("perplexity increase", f"{100 * scores['perplexity_increase']:+.2f}%"),
            ("top-1 agreement", f"{scores['top1_agreement']:.4f}"),
            ("mean KL", f"{scores['mean_kl']:.5f}"),
        ]
    if scores.get("generation"):
        g = scores["generation"]
        rows += [
            ("generation similarity", f"{g['similarity']:.4f} over {g['prompts']} prompts"),
            ("identical generations", f"{g['identical']:.2f}"),
            ("identical prefix", f"{g['prefix']:.2f} of the reference continuation"),
        ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def run(
    folder: str,
    reference=None,
    text=None,
    windows: int = 4,
    window_tokens: int = 512,
    generation_tokens: int = 32,
    json: bool = False,
):
    import json as json_module

    from qwen_edge.quantize.evaluate import evaluate

    scores = evaluate(folder, reference, text, windows, window_tokens, generation_tokens).to_dict()
    print(json_module.dumps(scores)) if json else print_scores(scores)
