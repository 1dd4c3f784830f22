"""An exported OpenVINO folder -> the same folder with NNCF-compressed weights, a report beside it.

verify the input (manifest, sha256s; fp16 / fp32 dynamic IR only)
-> recipe (preset + overrides) -> calibration windows from text, if the recipe is data-aware
-> nncf.compress_weights -> staged folder: IR, the input's other files, manifest with the recipe
-> report.json: perplexity, top-1 agreement and KL against the input folder -> sealed, renamed
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from importlib import metadata
from pathlib import Path

from qwen_edge.export import bundle
from qwen_edge.export.openvino_ir import MODEL_XML, io_of
from qwen_edge.runtime.manifest import ManifestError, verify
from qwen_edge.runtime.tokenizer import Tokenizer

from . import calibration
from .evaluate import evaluate
from .recipes import PRESETS, compress_openvino, preset

log = logging.getLogger(__name__)

REPORT = "report.json"


class QuantizeError(ValueError):
    """The folder cannot be quantized as asked."""


def quantize(
    folder: str | Path,
    output: str | Path,
    weights: str = "int4",
    ratio: float | None = None,
    group_size: int | None = None,
    calibration_text: str | Path | None = None,
    samples: int = 32,
    sample_tokens: int = 256,
    data_free: bool = False,
    report: bool = True,
    eval_text: str | Path | None = None,
    eval_windows: int = 4,
    overwrite: bool = False,
) -> dict:
    """Compress FOLDER's weights with the `weights` preset (and overrides) into OUTPUT; return the
    new manifest (its "report" holds the scores when `report`)."""
    folder = Path(folder)
    recipe = preset(weights)  # unknown names fail here, before any work
    overrides = {k: v for k, v in (("ratio", ratio), ("group_size", group_size)) if v is not None}
    recipe = dataclasses.replace(recipe, **overrides)
    if data_free:
        recipe = recipe.without_data()
    try:
        manifest = verify(folder)
    except ManifestError as e:
        raise QuantizeError(str(e)) from None
    if manifest.get("format") != "openvino":
        raise QuantizeError(
            f"{folder} is a {manifest.get('format')} export; quantize works on OpenVINO folders today: "
            "export with --format openvino"
        )
    if manifest.get("precision") not in ("fp16", "fp32"):
        raise QuantizeError(
            f"{folder} is already quantized ({manifest.get('precision')}): quantize the fp16 export it came from"
        )
    if manifest.get("graph") == "static":
        raise QuantizeError(f"{folder} is a static (NPU) export: use export --device-profile npu instead")
    start = time.perf_counter()
    with bundle.staged(output, overwrite) as tmp:
        import nncf
        import openvino as ov

        dataset, calib = None, None
        if recipe.data_aware:
            text, source = calibration.read_text(calibration_text)
            windows = calibration.windows(Tokenizer(folder).encode(text), samples, sample_tokens)
            dataset = nncf.Dataset(calibration.openvino_items(windows))
            calib = calibration.describe(text, source, windows)
            log.info("calibrating on %d windows (%d tokens) of %s", calib["windows"], calib["tokens"], source)
        model = ov.Core().read_model(str(folder / MODEL_XML))
        model, ran = compress_openvino(model, recipe, dataset)
        ov.save_model(model, str(tmp / MODEL_XML), compress_to_fp16=True)
        io = io_of(model)
        del model
        for name in manifest["files"]:
            if not name.startswith("openvino_model.") and name != REPORT:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / name, tmp / name)
        info = {k: v for k, v in manifest.items() if k not in ("files", "tools")}
        info.update(
            precision=weights,
            io=io,
            recipe={"name": weights, **ran.to_dict(), "calibration": calib},
            quantized_from={
                "folder": str(folder.resolve()),
                "sha256": manifest["files"]["openvino_model.bin"]["sha256"],
            },
            nncf=metadata.version("nncf"),
        )
        if report:
            scores = evaluate(tmp, reference=folder, text=eval_text, windows=eval_windows)
            info["report"] = scores.to_dict()
            (tmp / REPORT).write_text(json.dumps(info["report"], indent=2) + "\n")
        sealed = bundle.seal(tmp, info)
    log.info("quantized %s -> %s (%s) in %.1f s", folder, output, weights, time.perf_counter() - start)
    return sealed


def preset_names() -> list[str]:
    return [name for name in PRESETS if name != "int4-npu"]
