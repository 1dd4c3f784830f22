"""Generation on exported folders with ONNX Runtime or OpenVINO; no torch, transformers or nncf."""

from .engine import Engine, EngineError, Result, Session
from .generate import Sampling, Stats

__all__ = ["Engine", "EngineError", "Result", "Sampling", "Session", "Stats"]
