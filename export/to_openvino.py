"""MODEL -> a self-contained OpenVINO folder: IR (stateful by default), tokenizer IRs, HF files,
manifest. Loads in openvino_genai.LLMPipeline and optimum-intel's OVModelForCausalLM as it is.

`device_profile="npu"` writes what the Intel NPU compiles instead: two fully static stateless IRs
sharing one weights file — openvino_model.xml takes `max_prompt` tokens per call (chunked prefill),
openvino_decode.xml one — over a KV cache of `max_context` slots, weights compressed by `compress`
(the pipeline passes quantize.recipes.compress_npu, symmetric INT4); the NPU lint must pass before the
folder is sealed. Export sits below quantize: it is handed the compression, never imports it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from qwen_edge.models.loaders import Loaded, load, source_paths

from . import bundle, npu_rules, openvino_graph, openvino_ir
from .quantized_weight import Quantizer, quantized_info

log = logging.getLogger(__name__)

WEIGHTS = ("fp16", "fp32")
PROFILES = ("npu",)


class OpenVINOExportError(ValueError):
    """The OpenVINO export was asked for something it cannot produce."""


def export_openvino(
    model: str | Loaded,
    output: str | Path,
    weights: str = "fp16",
    stateless: bool = False,
    device_profile: str | None = None,
    max_prompt: int = npu_rules.NPU.max_prompt,
    max_context: int | None = None,
    overwrite: bool = False,
    compress: Callable | None = None,
    quantizer: Quantizer | None = None,
    recipe: dict | None = None,
) -> dict:
    """Export MODEL as an OpenVINO IR folder; return its manifest. `compress(ov.Model) -> (ov.Model,
    recipe dict)` is required by the NPU profile. `quantizer` compresses each weight as the graph
    is built (see export/quantized_weight.py); `recipe` (its name first) is then what the manifest records."""
    if weights not in WEIGHTS:
        raise OpenVINOExportError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if device_profile not in (None, *PROFILES):
        raise OpenVINOExportError(f"unknown device profile {device_profile!r}; choose one of {', '.join(PROFILES)}")
    if device_profile:
        max_context = max_context or npu_rules.NPU.max_context
    if device_profile and not 0 < max_prompt <= max_context:
        raise OpenVINOExportError(f"--max-prompt ({max_prompt}) must be between 1 and --max-context ({max_context})")
    if device_profile and compress is None:
        raise OpenVINOExportError(
            "the NPU profile needs its INT4 weight compression: use qwen_edge.quantize.pipeline.build(..., "
            "device_profile='npu') or pass compress=qwen_edge.quantize.recipes.compress_npu"
        )
    with (
        bundle.staged(output, overwrite, sources=source_paths(model)) as tmp,
        tqdm(total=4, desc="export openvino", leave=False, disable=None) as steps,
        # The tokenizer conversion (~5 s, mostly Python) runs beside loading and saving the model
        # (mostly GIL-free reads, casts and writes): its imports first, then the conversion itself.
        ThreadPoolExecutor(1, thread_name_prefix="tokenizer") as beside,
    ):
        start = time.perf_counter()
        beside.submit(openvino_ir.import_tokenizer_converter)
        owned = not isinstance(model, Loaded)
        # fp16 weights are loaded as fp16 (half the memory); the NPU's INT4 is compressed from them,
        # as optimum-intel's is.
        fp16 = weights == "fp16"
        loaded = load(model, torch.float16 if fp16 else torch.float32) if owned else model
        cfg, tokenizer_dir, source = loaded.config, loaded.tokenizer_dir, loaded.source
        tokenizer = beside.submit(openvino_ir.convert_tokenizer, tokenizer_dir, tmp) if tokenizer_dir else None
        if max_context and max_context > cfg.max_position_embeddings:
            raise OpenVINOExportError(
                f"--max-context {max_context} exceeds the model's {cfg.max_position_embeddings} positions"
            )
        steps.update()
        extra = {"ir_from": "built"}
        capacity = max_context if device_profile else None  # the NPU's static cache layout
        graph = openvino_graph.build(loaded.model, fp16=fp16, capacity=capacity, quantizer=quantizer)
        if owned:
            del loaded  # the graph's constants share the weights' memory: no copy either way
        steps.update()
        if device_profile:
            extra |= _npu_irs(graph, tmp, max_prompt, compress)
            io = extra.pop("io")
        else:
            # The built graph's weights are fp16 already (or integers): OpenVINO's fp16 pass would only
            # round its small f32 constants, the rotary frequencies among them (up to 5e-4 off, a phase
            # error growing with the position), and it skips them anyway once weights are compressed.
            io = openvino_ir.save(graph, tmp, cfg.num_hidden_layers, not stateless, fp16=False)
        del graph
        steps.update()
        bundle.write_model_files(cfg, tokenizer_dir, tmp)
        if tokenizer is not None:
            tokenizer.result()
        manifest = bundle.seal(
            tmp,
            {
                "format": "openvino",
                "graph": "static" if device_profile else "stateless" if stateless else "stateful",
                "model_file": openvino_ir.MODEL_XML,
                "precision": "int4" if device_profile else recipe["name"] if recipe else weights,
                "source": source,
                "config": cfg.to_dict(),
                # max_context: static KV slots; on a dynamic IR, the limit our runtime keeps when asked
                "shapes": {"max_context": max_context} | ({"max_prompt": max_prompt} if device_profile else {})
                if max_context
                else {},
                "io": io,
                **extra,
                **quantized_info(recipe),
                "tokenizer": (tmp / "tokenizer.json").exists(),
            },
        )
        if device_profile:
            problems = npu_rules.check(tmp)
            if problems:  # a bug of ours, not the user's: say what broke rather than ship it
                raise OpenVINOExportError(f"the NPU export breaks the NPU rules: {'; '.join(problems)}")
        steps.update()
    log.info("exported %s (OpenVINO IR, %s) in %.1f s", Path(output), manifest["graph"], time.perf_counter() - start)
    return manifest


def _npu_irs(model, out_dir: Path, max_prompt: int, compress: Callable) -> dict:
    """Compressed once, then a prefill IR (max_prompt tokens) and a decode IR (1 token) sharing
    the weights file."""
    model, recipe = compress(model)
    fixed = openvino_ir.fix_windows(model, out_dir, {openvino_ir.MODEL_XML: max_prompt, openvino_ir.DECODE_XML: 1})
    return {
        "io": fixed["io"][openvino_ir.MODEL_XML],
        "decode_file": openvino_ir.DECODE_XML,
        "decode_io": fixed["io"][openvino_ir.DECODE_XML],
        "weights_file": fixed["weights_file"],
        "device_profile": "npu",
        "recipe": recipe,
    }
