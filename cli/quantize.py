"""Compress an export folder's weights with NNCF (INT8 / INT4), and report what it cost.

Writes OUTPUT atomically: the compressed IR (or MatMulNBits ONNX graph), the input's tokenizer and
config files, manifest.json with the recipe, and report.json (perplexity, top-1 agreement, KL and
generation similarity against the input folder).
"""

from __future__ import annotations


def configure_parser(p) -> None:
    p.add_argument("folder", help="an fp16 / fp32 OpenVINO export folder, or an ONNX ort folder (INT4 only)")
    p.add_argument("-o", "--output", required=True, help="folder to create")
    p.add_argument("--weights", default="int4", help="recipe preset: int4 (default), int8, int4-mobile, int4-npu")
    p.add_argument("--ratio", type=float, help="share of the layers at 4 bit (the rest at INT8)")
    p.add_argument(
        "--group-size", type=int, help="INT4 group size (the preset's or the model size's default; -1 channel-wise)"
    )
    p.add_argument(
        "--calibration",
        dest="calibration_text",
        help="text file for the data-aware methods (default: a built-in sample)",
    )
    p.add_argument("--samples", type=int, default=32, help="calibration windows")
    p.add_argument("--sample-tokens", type=int, default=256, help="tokens per calibration window")
    p.add_argument("--data-free", action="store_true", help="no data-aware method, whatever the preset says")
    p.add_argument("--awq", action="store_true", help="AWQ on the calibration text")
    p.add_argument("--scale-estimation", action="store_true", help="NNCF's scale estimation on the calibration text")
    p.add_argument(
        "--gptq", action="store_true",
        help="NNCF's GPTQ on the calibration text: on the real 0.5B the most accurate INT4 measured "
        "(WikiText-2 +0.7%% against +4.7%% data-free), on the 1.5B not (held-out code +11.5%% against "
        "+7.9%%); ~10x the compression time",
    )  # fmt: skip
    p.add_argument("--no-report", dest="report", action="store_false", help="skip the accuracy report")
    p.add_argument("--eval-text", help="text file for the report (default: the built-in sample)")
    p.add_argument("--eval-windows", type=int, default=4, help="512-token windows the report reads")
    p.add_argument(
        "--max-ppl-increase",
        type=_relative,
        help="accuracy budget: try recipes from most to least compressed, keep the smallest whose perplexity "
        "rises at most this much over the input's (5%% or 0.05)",
    )
    p.add_argument("--min-top1", type=float, help="accuracy budget: least top-1 agreement with the input (0.9)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def _relative(text: str) -> float:
    import argparse

    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share: write 5% or 0.05") from None


def run(**kwargs) -> None:
    from qwen_edge.quantize.quantize import quantize

    from .eval import print_scores

    manifest = quantize(**kwargs)
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"{kwargs['output']}: {manifest['format']} {manifest['precision']}, {total / 1e6:.1f} MB")
    for i, t in enumerate(manifest.get("budget", {}).get("tries", []), 1):
        scores = t["scores"]
        print(
            f"try {i}: {t['recipe']['mode']} g{t['recipe']['group_size']} ratio {t['recipe']['ratio']:g}: "
            f"{t['model_bytes'] / 1e6:.1f} MB, perplexity {100 * scores['perplexity_increase']:+.2f}%, "
            f"top-1 {scores['top1_agreement']:.4f} -> {'kept' if t['within_budget'] else 'over budget'}"
        )
    if "report" in manifest:
        print_scores(manifest["report"])
