"""What the window shows about an export folder and where it can run, without Qt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qwen_edge.runtime import EngineError
from qwen_edge.runtime import manifest as manifest_file

BACKEND_LABEL = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class FolderInfo:
    folder: Path
    name: str
    format: str  # "onnx" or "openvino"
    graph: str
    precision: str
    size_bytes: int

    @property
    def summary(self) -> str:
        size = f"{self.size_bytes / 1e9:.2f} GB" if self.size_bytes >= 1e9 else f"{self.size_bytes / 1e6:.0f} MB"
        return f"{BACKEND_LABEL[self.format]} · {self.graph} · {self.precision.upper()} · {size}"


def describe(folder: str | Path) -> FolderInfo:
    """The folder's model name, format, precision and size, from its manifest (nothing hashed)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EngineError(f"{folder} is not a folder: open an export folder (qwen-edge export ... -o FOLDER)")
    try:
        m = manifest_file.read(folder)
    except manifest_file.ManifestError as e:
        raise EngineError(str(e)) from None
    source = (m.source or {}).get("path") or (m.raw.get("quantized_from") or "")
    name = Path(str(source)).stem if source else folder.name
    size = sum(int(entry["bytes"]) for entry in m.files.values())
    return FolderInfo(folder, name or folder.name, m.format, m.graph, m.precision or "?", size)


def devices(fmt: str) -> list[str]:
    """The devices a folder of this format can run on here: OpenVINO's devices (CPU, GPU, NPU),
    or the devices of ONNX Runtime's execution providers that are present."""
    if fmt == "openvino":
        try:
            import openvino as ov
        except ModuleNotFoundError:
            return []
        return list(ov.Core().available_devices)
    import onnxruntime as ort

    from qwen_edge.runtime.onnx_backend import PROVIDERS

    present = set(ort.get_available_providers())
    return [device for device, provider in PROVIDERS.items() if provider in present]
