"""The ORT-format model for native ONNX Runtime Mobile apps (Android / iOS), beside a mobile bundle.

ONNX Runtime's own converter (`onnxruntime.tools.convert_onnx_models_to_ort`) optimizes the graph
for a target (arm: phones), writes it as an .ort flatbuffer with the weights inside, and lists the
operators it needs (`required_operators.config`) for a reduced, smaller ONNX Runtime build
(`--include_ops_by_config`).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SUBFOLDER = "ort_mobile"


class OrtMobileError(RuntimeError):
    """ONNX Runtime's converter refused the graph."""


def write_ort_format(folder: Path, graph: str, data: str, target: str = "arm") -> list[str]:
    """folder/SUBFOLDER/<graph>.ort and required_operators.config, from folder/graph (+ its data)."""
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".ort-") as tmp:
        work = Path(tmp) / "in"
        work.mkdir()
        for name in (graph, data):  # the converter reads every .onnx of a folder: give it one
            shutil.copyfile(folder / name, work / name)
        out = folder / SUBFOLDER
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(work)]
        cmd += ["--output_dir", str(out), "--optimization_style", "Fixed", "--target_platform", target]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise OrtMobileError(f"ONNX Runtime's ORT-format converter failed: {tail}")
    for extra in out.glob("*.onnx"):  # keep the .ort model and the operator list only
        extra.unlink()
    written = sorted(p.name for p in out.iterdir())
    log.info("ORT format for %s: %s", target, ", ".join(written))
    return written
