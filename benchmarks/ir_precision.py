"""How far the OpenVINO IR's logits are from our torch model on the real Qwen2.5-Coder-0.5B.

    .venv/bin/python benchmarks/ir_precision.py [--tokens 256]

One prefill over WikiText-2 test text (../shared, or any --text file): max |diff| of the logits
and top-1 agreement with torch fp32, for fp32 and fp16 IR weights, computed in f32 and in the CPU
plugin's default precision (bf16 on CPUs that have it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from qwen_edge.export.to_openvino import export_openvino
from qwen_edge.models.loaders import load
from qwen_edge.runtime.tokenizer import Tokenizer

WIKITEXT = Path(__file__).resolve().parents[2] / "shared/data/wikitext-2-raw/wiki.test.raw"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--text", default=str(WIKITEXT))
    args = p.parse_args()
    real = load("qwen2.5-coder-0.5b-instruct")
    text = Path(args.text).read_text().replace("\r\n", "\n")
    ids = np.array([Tokenizer(real.tokenizer_dir).encode(text[:20000])[: args.tokens]])
    with torch.no_grad():
        t = torch.from_numpy(ids)
        ref = real.model(t, torch.arange(t.shape[1])[None], torch.ones_like(t), real.model.empty_cache(1))[0].numpy()
    feed = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1])[None],
        "beam_idx": np.array([0], np.int32),
    }
    print(f"{ids.shape[1]} tokens of {Path(args.text).name}; reference: torch fp32")
    print(f"{'IR weights':<10} {'inference':<10} {'max |diff|':>10} {'top-1 agree':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for weights in ("fp32", "fp16"):
            folder = Path(tmp) / weights
            export_openvino(real, folder, weights=weights)
            for hint in ("f32", "default"):
                config = {"INFERENCE_PRECISION_HINT": "f32"} if hint == "f32" else {}
                compiled = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", config)
                logits = compiled.create_infer_request().infer(feed)["logits"]
                agree = (logits.argmax(-1) == ref.argmax(-1)).mean()
                print(f"{weights:<10} {hint:<10} {np.abs(logits - ref).max():>10.4f} {agree:>12.3f}")


if __name__ == "__main__":
    main()
