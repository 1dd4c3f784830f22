"""Write initializers into one external data file as they come: no second copy in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


class ExternalData:
    """`tensor(name, array)` appends the array's bytes to `path` and returns an initializer
    that points at them (ONNX's external data: location, offset, length)."""

    def __init__(self, path: Path):
        self.path, self.offset = Path(path), 0
        self._file = open(self.path, "wb")

    def tensor(self, name: str, array: np.ndarray, template: onnx.TensorProto | None = None) -> onnx.TensorProto:
        array = np.ascontiguousarray(array)  # the tensor's own memory when already contiguous
        t = onnx.TensorProto()
        if template is not None:
            t.CopyFrom(template)
            del t.external_data[:]
            t.ClearField("raw_data")
        else:
            t.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        t.name = name
        t.dims[:] = array.shape
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", self.offset), ("length", array.nbytes)):
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
        self._file.write(memoryview(array).cast("B"))
        self.offset += array.nbytes
        return t

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
