"""MODEL -> a self-contained OpenVINO folder: IR (stateful by default), tokenizer IRs, HF files,
manifest. Loads in openvino_genai.LLMPipeline and optimum-intel's OVModelForCausalLM as it is."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from qwen_edge.models.loaders import Loaded, load

from . import bundle, onnx_graph, openvino_ir
from .to_onnx import write_model_files

log = logging.getLogger(__name__)

WEIGHTS = ("fp16", "fp32")


class OpenVINOExportError(ValueError):
    """The OpenVINO export was asked for something it cannot produce."""


def export_openvino(
    model: str | Loaded,
    output: str | Path,
    weights: str = "fp16",
    stateless: bool = False,
    overwrite: bool = False,
) -> dict:
    """Export MODEL as an OpenVINO IR folder; return its manifest."""
    if weights not in WEIGHTS:
        raise OpenVINOExportError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    with (
        bundle.staged(output, overwrite) as tmp,
        tqdm(total=4, desc="export openvino", leave=False, disable=None) as steps,
    ):
        start = time.perf_counter()
        owned = not isinstance(model, Loaded)
        loaded = load(model, torch.float32) if owned else model
        cfg, tokenizer_dir, source = loaded.config, loaded.tokenizer_dir, loaded.source
        steps.update()
        with tempfile.TemporaryDirectory(dir=tmp, prefix=".onnx-") as onnx_dir:
            onnx_path = Path(onnx_dir) / "model.onnx"
            onnx_graph.trace(loaded.model, onnx_path, "portable")
            if owned:
                del loaded  # conversion reads the ONNX file: free the torch weights first (-2 GB for 0.5B)
            steps.update()
            io = openvino_ir.convert(onnx_path, tmp, cfg.num_hidden_layers, not stateless, weights == "fp16")
        steps.update()
        write_model_files(cfg, tokenizer_dir, tmp)
        if tokenizer_dir is not None:
            openvino_ir.convert_tokenizer(tmp, tmp)
        manifest = bundle.seal(
            tmp,
            {
                "format": "openvino",
                "graph": "stateless" if stateless else "stateful",
                "model_file": openvino_ir.MODEL_XML,
                "precision": weights,
                "source": source,
                "config": cfg.to_dict(),
                "shapes": {},
                "io": io,
                "tokenizer": (tmp / "tokenizer.json").exists(),
            },
        )
        steps.update()
    log.info("exported %s (OpenVINO IR, %s) in %.1f s", Path(output), manifest["graph"], time.perf_counter() - start)
    return manifest
