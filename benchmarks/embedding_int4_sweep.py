"""One row of the INT4 recipe sweep on the real 0.5B: the embedding table at INT4 in its own NNCF
pass (or not), then the 0.5B default recipe with --ratio, scored against the fp16 folder.

    .venv/bin/python benchmarks/embedding_int4_sweep.py FP16_FOLDER OUT emb128 0.8
        (variant: emb32 | emb64 | emb128 | plain; ratio: share of MatMuls at INT4)

The library does the same through Recipe(embedding_mode=...); this script fixes the embedding
group to compare groups.
"""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import nncf
import openvino as ov

from qwen_edge.quantize import calibration
from qwen_edge.quantize.evaluate import evaluate
from qwen_edge.quantize.recipes import compress_openvino, default_recipe
from qwen_edge.runtime.tokenizer import Tokenizer

WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"


def main() -> None:
    src, out, variant, ratio = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    model = ov.Core().read_model(src / "openvino_model.xml")
    if variant.startswith("emb"):
        model = nncf.compress_weights(
            model,
            mode=nncf.CompressWeightsMode.INT4_ASYM,
            group_size=int(variant[3:]),
            ratio=1.0,
            all_layers=True,
            ignored_scope=nncf.IgnoredScope(types=["MatMul"]),
        )
    recipe = dataclasses.replace(default_recipe("int4", 896, 24), ratio=ratio, embedding_mode=None)
    windows = calibration.windows(Tokenizer(src).encode(calibration.read_text(None)[0]), 32, 256)
    model, _ = compress_openvino(model, recipe, nncf.Dataset(calibration.openvino_items(windows)))
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out / "openvino_model.xml"), compress_to_fp16=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("openvino_model."):
            shutil.copy(f, out / f.name)
    m = json.loads((src / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({k: m[k] for k in ("format", "graph", "model_file", "config")}))
    scores = evaluate(out, reference=src, text=WIKI, windows=4, generation_tokens=0).to_dict()
    size = sum(f.stat().st_size for f in out.glob("openvino_model.*"))
    print(json.dumps({"variant": variant, "ratio": ratio, **scores, "model_bytes": size}))


if __name__ == "__main__":
    main()
