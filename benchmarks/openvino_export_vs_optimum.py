"""Our OpenVINO IR export against `optimum-cli export openvino`, side by side, interleaved.

    .venv/bin/python benchmarks/openvino_export_vs_optimum.py [Qwen2-0.5B] --runs 3 [--weights fp16|int4-npu]

int4-npu: ours with `--device-profile npu` (static prefill + decode IRs, symmetric INT4 g128) against
`optimum-cli ... --weight-format int4 --sym --group-size 128 --ratio 1.0` (Intel's NPU recipe).

Both read the same HF folder (random weights at the shape, written once as safetensors), each run
in a fresh process; time is wall clock, peak RSS that process's own. Prints medians and ratios;
--json keeps the raw samples.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from export_cost import folder_bytes, run_fresh

BIN = os.path.dirname(sys.executable)


SHARED_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "qwen2.5-tokenizer"


def write_hf_folder(shape: str, folder: Path, tokenizer: Path | None = None) -> None:
    """Random weights at the shape as safetensors, plus the tokenizer files (both tools then
    convert the tokenizer too, as a real export does)."""
    import shutil

    from safetensors.torch import save_file

    from qwen_edge.models.shapes import random_model

    model = random_model(shape)
    folder.mkdir()
    config = model.config.to_dict() | {"torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(config))
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        weights.pop("lm_head.weight")
    save_file(weights, folder / "model.safetensors")
    for f in sorted(tokenizer.iterdir()) if tokenizer else []:
        shutil.copyfile(f, folder / f.name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shape", nargs="?", default="Qwen2-0.5B")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--weights", default="fp16", choices=["fp16", "fp32", "int4-npu"])
    p.add_argument("--json")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=SHARED_TOKENIZER if SHARED_TOKENIZER.is_dir() else None,
        help="tokenizer files to put in the HF folder (default: ../shared/data/qwen2.5-tokenizer)",
    )
    args = p.parse_args()
    tools = {
        "qwen-edge": lambda src, out: [
            f"{BIN}/qwen-edge",
            "export",
            src,
            "-o",
            out,
            "--format",
            "openvino",
            *(["--device-profile", "npu"] if args.weights == "int4-npu" else ["--weights", args.weights]),
        ],
        "optimum-cli": lambda src, out: [
            f"{BIN}/optimum-cli",
            "export",
            "openvino",
            "-m",
            src,
            "--task",
            "text-generation-with-past",
            "--weight-format",
            *(
                ["int4", "--sym", "--group-size", "128", "--ratio", "1.0"]
                if args.weights == "int4-npu"
                else [args.weights]
            ),
            out,
        ],
    }
    samples = {name: [] for name in tools}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "hf"
        write_hf_folder(args.shape, src, args.tokenizer)
        for i in range(args.runs):
            for name, cmd in tools.items():  # interleaved, so drift hits both alike
                out = f"{tmp}/{name}-{i}"
                sample = run_fresh(cmd(str(src), out))
                sample["bytes"] = folder_bytes(out)
                samples[name].append(sample)
                print(f"run {i} {name}: {sample['seconds']:.1f} s, {sample['peak_rss_gb']:.2f} GB", flush=True)
    med = {
        n: {k: statistics.median(s[k] for s in v) for k in ("seconds", "peak_rss_gb", "bytes")}
        for n, v in samples.items()
    }
    for name, m in med.items():
        print(
            f"{name}: median {m['seconds']:.1f} s, peak RSS {m['peak_rss_gb']:.2f} GB, folder {m['bytes'] / 1e9:.2f} GB"
        )
    ours, theirs = med["qwen-edge"], med["optimum-cli"]
    print(
        f"ratio qwen-edge / optimum-cli: time {ours['seconds'] / theirs['seconds']:.2f}x, "
        f"peak RSS {ours['peak_rss_gb'] / theirs['peak_rss_gb']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"shape": args.shape, "weights": args.weights, "tokenizer": bool(args.tokenizer), "samples": samples},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
