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
from qwen_edge.runtime.manifest import ManifestError, sha256_file, verify
from qwen_edge.runtime.tokenizer import Tokenizer

from . import calibration
from .evaluate import WINDOW_TOKENS, evaluate
from .recipes import Recipe, compress_openvino, default_recipe, ladder, preset

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
    awq: bool = False,
    scale_estimation: bool = False,
    gptq: bool = False,
    report: bool = True,
    eval_text: str | Path | None = None,
    eval_windows: int = 4,
    max_ppl_increase: float | None = None,
    min_top1: float | None = None,
    overwrite: bool = False,
    embedding_mode: str | None = None,
) -> dict:
    """Compress FOLDER's weights with the `weights` preset (and overrides) into OUTPUT; return the
    new manifest (its "report" holds the scores when `report`). `embedding_mode` overrides the
    preset's for the input embedding table (int4_sym: on ONNX, the symmetric table in blocks of 32
    that onnxruntime-web's WebGPU kernel reads).

    With an accuracy budget (`max_ppl_increase`, relative: 0.05 is +5%; and / or `min_top1`),
    recipes are tried from most to least compressed (`recipes.ladder`) and the first within the
    budget — the smallest — is kept; every try is recorded under "budget"."""
    folder = Path(folder)
    preset(weights)  # unknown names fail here, before any work
    manifest = _checked_input(folder)
    config = manifest.config
    recipe = default_recipe(weights, config.get("hidden_size"), config.get("num_hidden_layers"))
    methods = {k: True for k, v in (("awq", awq), ("scale_estimation", scale_estimation), ("gptq", gptq)) if v}
    if data_free and methods:
        raise QuantizeError("--data-free and --awq / --scale-estimation / --gptq disagree: give one")
    overrides = {k: v for k, v in (("ratio", ratio), ("group_size", group_size)) if v is not None} | methods
    overrides |= {"embedding_mode": embedding_mode} if embedding_mode else {}
    recipe = dataclasses.replace(recipe, **overrides)
    if data_free:
        recipe = recipe.without_data()
    budget = {k: v for k, v in (("max_ppl_increase", max_ppl_increase), ("min_top1", min_top1)) if v is not None}
    if manifest.format == "onnx" and recipe.data_aware and not methods:
        # a preset's methods stay data-free on ONNX (as they always have); asked for, they are carried over
        log.info("ONNX: data-free compression (ask for --awq / --gptq ... to run them through OpenVINO)")
        recipe = recipe.without_data()
    _check_text_inputs(folder, manifest, recipe, report or bool(budget), calibration_text, eval_text, eval_windows)
    start = time.perf_counter()
    with bundle.staged(output, overwrite, sources=[folder]) as tmp:
        dataset, calib = _calibration(folder, recipe, calibration_text, samples, sample_tokens, manifest.files)
        candidates = ladder(recipe, groups=(128,) if weights == "int4-npu" else (64, 32)) if budget else [recipe]
        tries, kept, continuations = [], None, {}
        for i, candidate in enumerate(candidates):
            attempt = tmp / f".try-{i}"
            attempt.mkdir()
            ran, io = _compress(folder, attempt, candidate, dataset, manifest)
            scores = None
            if report or budget:
                _copy_other_files(folder, manifest, attempt)
                # what the folder is, for evaluate (replaced by the sealed manifest at the end)
                kind = {k: manifest.raw[k] for k in ("format", "graph", "model_file", "config") if k in manifest.raw}
                bundle.seal(attempt, kind)
                scores = evaluate(
                    attempt,
                    folder,
                    eval_text,
                    eval_windows,
                    reference_continuations=continuations,
                    text_flag="--eval-text",
                ).to_dict()
            fits = not budget or _within(scores, budget)
            size = sum(f.stat().st_size for f in attempt.glob(_weights_glob(manifest)))
            tries.append({"recipe": ran.to_dict(), "model_bytes": size, "scores": scores, "within_budget": fits})
            if budget:
                log.info("try %d: %s -> %s", i + 1, _short(ran), _summary(scores, fits))
            if fits:
                kept = (attempt, ran, io, scores)
                break
            shutil.rmtree(attempt)
        if kept is None:
            best = min(tries, key=lambda t: t["scores"]["perplexity"])
            raise QuantizeError(
                f"no recipe within the budget ({_budget_text(budget)}); the most accurate try was "
                f"{_short(Recipe(**best['recipe']))}: {_summary(best['scores'], False)}. Loosen the budget"
            )
        attempt, ran, io, scores = kept
        for f in attempt.iterdir():
            f.rename(tmp / f.name)
        attempt.rmdir()
        _copy_other_files(folder, manifest, tmp)
        info = {k: v for k, v in manifest.raw.items() if k not in ("files", "tools", "report", "budget")}
        info.update(
            precision="int8" if ran.bits == 8 else weights,
            io=io,
            recipe={"name": weights, **ran.to_dict(), "calibration": calib if ran.data_aware else None},
            quantized_from={"folder": str(folder.resolve()), "manifest_sha256": sha256_file(folder / "manifest.json")},
            nncf=metadata.version("nncf"),
        )
        if budget:
            info["budget"] = {**budget, "tries": tries}
        if scores is not None:
            info["report"] = scores
            (tmp / REPORT).write_text(
                json.dumps({**scores, **({"budget": info["budget"]} if budget else {})}, indent=2) + "\n"
            )
        sealed = bundle.seal(tmp, info)
    log.info("quantized %s -> %s (%s) in %.1f s", folder, output, _short(ran), time.perf_counter() - start)
    return sealed


def _checked_input(folder: Path) -> dict:
    try:
        manifest = verify(folder)
    except ManifestError as e:
        raise QuantizeError(str(e)) from None
    kind = (manifest.format, manifest.graph)
    if kind[0] == "onnx" and kind[1] != "ort":
        raise QuantizeError(
            f"{folder} is an ONNX {kind[1]} graph; ONNX quantization targets the ort graph (MatMulNBits): "
            "export with --graph ort, or use --format openvino"
        )
    if kind[0] not in ("onnx", "openvino"):
        raise QuantizeError(f"{folder} is not an ONNX or OpenVINO export folder")
    if manifest.precision not in ("fp16", "fp32"):
        raise QuantizeError(
            f"{folder} is already quantized ({manifest.precision}): quantize the fp16 export it came from"
        )
    if kind[1] == "static":
        raise QuantizeError(f"{folder} is a static (NPU) export: use export --device-profile npu instead")
    return manifest


def _check_text_inputs(folder, manifest, recipe, scored: bool, calibration_text, eval_text, eval_windows) -> None:
    """What the run will read as text, checked before any compression starts."""
    if (scored or recipe.data_aware) and "tokenizer.json" not in manifest.files:
        raise QuantizeError(
            f"{folder} has no tokenizer.json, which the accuracy report, a budget and calibration read text "
            "through: export a model that has a tokenizer, or pass --no-report --data-free"
        )
    if calibration_text is not None:  # checked even when unused: a wrong file is still a mistake to report
        calibration.read_text(calibration_text)
        if not recipe.data_aware:
            log.warning("%s is not used: this recipe is data-free", calibration_text)
    if scored:
        if eval_windows < 1:
            raise QuantizeError(f"--eval-windows ({eval_windows}) must be at least 1")
        text, source = calibration.read_text(eval_text, "--eval-text")
        tokens = len(Tokenizer(folder, manifest.files).encode(text))
        if tokens < WINDOW_TOKENS:
            raise QuantizeError(
                f"{source} has {tokens} tokens, fewer than one {WINDOW_TOKENS}-token window: give a longer --eval-text"
            )


def _calibration(folder: Path, recipe: Recipe, text_path, samples: int, sample_tokens: int, manifest_files=None):
    """(nncf.Dataset, description) for a data-aware recipe, else (None, None)."""
    if not recipe.data_aware:
        return None, None
    from .nncf_import import import_nncf

    nncf = import_nncf()

    text, source = calibration.read_text(text_path)
    windows = calibration.windows(Tokenizer(folder, manifest_files).encode(text), samples, sample_tokens)
    calib = calibration.describe(text, source, windows)
    log.info("calibrating on %d windows (%d tokens) of %s", calib["windows"], calib["tokens"], source)
    return nncf.Dataset(calibration.openvino_items(windows)), calib


def _compress(folder: Path, out: Path, recipe: Recipe, dataset, manifest: dict) -> tuple[Recipe, dict]:
    if manifest.format == "onnx":
        from .onnx_weights import compress_onnx

        if dataset is not None:  # NNCF's data-aware methods on an IR of these weights, integers carried over
            from qwen_edge.models.qwen2 import Qwen2Config

            from .carry_over import compress_carried

            config = Qwen2Config.from_dict(manifest.config)
            ran = compress_carried(folder / manifest.model_file, out / manifest.model_file, config, recipe, dataset)
        else:
            ran = compress_onnx(folder / manifest.model_file, out / manifest.model_file, recipe)
        if manifest.runtime_file:
            from qwen_edge.export.ort_graph import write_last_logits

            write_last_logits(out / manifest.model_file)
        return ran, dict(manifest.io)
    import openvino as ov

    model = ov.Core().read_model(str(folder / MODEL_XML))
    model, ran = compress_openvino(model, recipe, dataset)
    ov.save_model(model, str(out / MODEL_XML), compress_to_fp16=True)
    return ran, io_of(model)


def _weights_glob(manifest: dict) -> str:
    return f"{manifest.model_file}*" if manifest.format == "onnx" else "openvino_model.*"


def _copy_other_files(folder: Path, manifest: dict, out: Path) -> None:
    model = manifest.model_file if manifest.format == "onnx" else "openvino_model."
    for name in manifest.files:
        if not name.startswith(model) and name != REPORT and not (out / name).exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, out / name)


def _within(scores: dict, budget: dict) -> bool:
    ok = True
    if "max_ppl_increase" in budget:
        ok &= scores["perplexity_increase"] <= budget["max_ppl_increase"]
    if "min_top1" in budget:
        ok &= scores["top1_agreement"] >= budget["min_top1"]
    return bool(ok)


def _short(r: Recipe) -> str:
    if r.bits == 8:
        return r.mode
    group = "channel-wise" if r.group_size == -1 else f"g{r.group_size}"
    return f"{r.mode} {group} ratio {r.ratio:g}" + (f" {r.methods}" if r.methods else "")


def _summary(scores: dict | None, fits: bool) -> str:
    if scores is None:
        return "not evaluated"
    verdict = "within budget" if fits else "over budget"
    return f"perplexity {100 * scores['perplexity_increase']:+.2f}%, top-1 {scores['top1_agreement']:.4f} ({verdict})"


def _budget_text(budget: dict) -> str:
    parts = []
    if "max_ppl_increase" in budget:
        parts.append(f"perplexity +{100 * budget['max_ppl_increase']:g}% at most")
    if "min_top1" in budget:
        parts.append(f"top-1 at least {budget['min_top1']:g}")
    return ", ".join(parts)
