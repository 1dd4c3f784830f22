"""MODEL -> a self-contained ONNX folder: graph, config, tokenizer, chat template, manifest."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from qwen_edge.models.loaders import Loaded, load, source_paths

from . import bundle, onnx_graph, ort_graph
from .bundle import write_model_files
from .quantized_weight import Quantizer, quantized_info

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
GRAPHS = ("ort", "portable", "static")


class ExportError(ValueError):
    """The export was asked for something it cannot produce."""


STATIC_CONTEXT = 1024  # KV slots of a static graph unless told
ORT_CONTEXT = 4096  # onnxruntime-genai allocates its KV cache for max_length up front (100 MB at 0.5B fp32)


def context_default(graph: str, positions: int) -> int:
    """--max-context when not given: static graphs hold 1024 slots, the ort graph 4096 (what
    onnxruntime-genai preallocates), dynamic graphs the model's own positions."""
    return min(positions, {"static": STATIC_CONTEXT, "ort": ORT_CONTEXT}.get(graph, positions))


def export_onnx(
    model: str | Loaded,
    output: str | Path,
    graph: str = "ort",
    max_prompt: int = 128,
    max_context: int | None = None,
    dtype: str = "fp32",
    overwrite: bool = False,
    quantizer: Quantizer | None = None,
    recipe: dict | None = None,
) -> dict:
    """Export MODEL (see qwen_edge.models.loaders.load, or an already loaded one) as an ONNX
    folder; return its manifest. `max_context`: the longest prompt + reply the folder serves (see
    context_default). `quantizer` (the `ort` graph only) compresses each weight as it is written
    (see export/quantized_weight.py); `recipe` (its name first) is then what the manifest records."""
    if quantizer is not None and graph != "ort":
        raise ExportError("quantized weights are written into the ort graph only")

    if graph not in GRAPHS:
        raise ExportError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if graph == "static" and not 0 < max_prompt <= (max_context or STATIC_CONTEXT):
        raise ExportError(f"--max-prompt ({max_prompt}) must be between 1 and --max-context ({max_context})")
    with (
        bundle.staged(output, overwrite, sources=source_paths(model)) as tmp,
        tqdm(total=4, desc="export onnx", leave=False, disable=None) as steps,
    ):
        start = time.perf_counter()
        steps.set_postfix_str("load")
        loaded = model if isinstance(model, Loaded) else load(model, DTYPES[dtype])
        steps.update()
        positions = loaded.config.max_position_embeddings
        if max_context and max_context > positions:
            raise ExportError(f"--max-context {max_context} exceeds the model's {positions} positions")
        max_context = max_context or context_default(graph, positions)
        steps.set_postfix_str("trace")
        extra = {}
        if graph == "ort":
            io = ort_graph.build(loaded.model, tmp / "model.onnx", quantizer=quantizer)
            extra["runtime_file"] = ort_graph.write_last_logits(tmp / "model.onnx")
        else:
            io = onnx_graph.trace(loaded.model, tmp / "model.onnx", graph, max_prompt, max_context, graph == "static")
        if graph == "static":  # a one-token graph for decode, sharing the prefill graph's weights file
            extra["decode_io"] = onnx_graph.trace(loaded.model, tmp / "decode.onnx", graph, 1, max_context, True)
            extra["decode_file"] = "decode.onnx"
            onnx_graph.share_weights(tmp / "model.onnx", tmp / "decode.onnx")
        steps.update()
        steps.set_postfix_str("files")
        write_model_files(loaded.config, loaded.tokenizer_dir, tmp)
        if graph == "ort":  # onnxruntime-genai preallocates KV for max_length: --max-context sets it
            ort_graph.write_genai_config(tmp, loaded.model, max_context)
        steps.update()
        steps.set_postfix_str("manifest")
        shapes = {"max_context": max_context} | ({"max_prompt": max_prompt} if graph == "static" else {})
        manifest = bundle.seal(
            tmp,
            {
                "format": "onnx",
                "graph": graph,
                "model_file": "model.onnx",
                "precision": recipe["name"] if recipe else dtype,
                "source": loaded.source,
                "config": loaded.config.to_dict(),
                "shapes": shapes,
                "io": io,
                **extra,
                **quantized_info(recipe),
                "tokenizer": (tmp / "tokenizer.json").exists(),
            },
        )
        steps.update()
    log.info("exported %s (%s graph) in %.1f s", Path(output), graph, time.perf_counter() - start)
    return manifest
