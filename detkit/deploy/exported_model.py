"""Running an exported detector (ONNX through ONNX Runtime, or TorchScript) from Python or `detkit infer`.

An exported file is self-contained: the graph takes one RGB image as uint8 (H, W, 3) and returns
``boxes`` float32 (D, 4) xyxy in that image's pixels, ``scores`` float32 (D,) and ``labels`` int64 (D,)
in 1..K (see :mod:`detkit.deploy.export_graph`); the class names and settings travel with it as
metadata (ONNX metadata_props, a ``detkit.json`` extra file in TorchScript).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Dict, Optional

import numpy as np
import torch

from detkit.errors import ExportError

__all__ = ["ExportedModel", "load_exported", "exported_format", "require_onnx", "METADATA_KEY", "TORCHSCRIPT_EXTRA"]

METADATA_KEY = "detkit"  # ONNX metadata_props key holding the JSON metadata
TORCHSCRIPT_EXTRA = "detkit.json"  # name of the metadata file inside a TorchScript archive
EXPORT_EXTRA = "export"  # the pip extra that installs onnx and onnxruntime


def require_onnx(need_runtime: bool = True):
    """Import onnx (and onnxruntime); a clear ExportError naming the extra when they are missing."""
    try:
        import onnx
        runtime = None
        if need_runtime:
            import onnxruntime as runtime
    except ImportError as exc:
        raise ExportError(f"ONNX export and inference need the packages onnx and onnxruntime ({exc.name} is "
                          f"not installed): pip install -e \".[{EXPORT_EXTRA}]\" (or pip install onnx onnxruntime)"
                          ) from None
    return onnx, runtime


def exported_format(path: str) -> str:
    """'onnx' or 'torchscript', from the file's content (a TorchScript file is a zip archive)."""
    if not os.path.isfile(path):
        raise ExportError(f"exported model '{path}' does not exist (expected a .onnx or TorchScript .pt file "
                          f"written by detkit export)")
    if zipfile.is_zipfile(path):
        return "torchscript"
    if path.lower().endswith(".onnx"):
        return "onnx"
    raise ExportError(f"'{path}' is neither a TorchScript archive nor a .onnx file")


class ExportedModel:
    """An exported detector with its metadata.

    Attributes:
        path, format ('onnx' | 'torchscript'), metadata (dict: classes, category_ids, settings),
        classes (names; label k is classes[k - 1]), category_ids.
    """

    def __init__(self, path: str, *, num_threads: Optional[int] = None) -> None:
        self.path, self.format = path, exported_format(path)
        try:
            if self.format == "onnx":
                self._load_onnx(num_threads)
            else:
                self._load_torchscript()
        except ExportError:
            raise
        except Exception as exc:  # a truncated or foreign file: name it
            raise ExportError(f"exported model '{path}' cannot be loaded as {self.format}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        self.classes = list(self.metadata.get("classes", []))
        self.category_ids = list(self.metadata.get("category_ids") or range(1, len(self.classes) + 1))

    def _load_onnx(self, num_threads: Optional[int]) -> None:
        _, ort = require_onnx()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        self._session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        props = self._session.get_modelmeta().custom_metadata_map
        self.metadata = json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}

    def _load_torchscript(self) -> None:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision.nms / roi_align used by the graph)

        extra = {TORCHSCRIPT_EXTRA: ""}
        self._module = torch.jit.load(self.path, map_location="cpu", _extra_files=extra)
        self.metadata = json.loads(extra[TORCHSCRIPT_EXTRA]) if extra[TORCHSCRIPT_EXTRA] else {}

    def detect(self, image: np.ndarray) -> Dict[str, torch.Tensor]:
        """image: RGB uint8 (H, W, 3) -> dict(boxes float32 (D, 4), scores float32 (D,), labels int64 (D,))."""
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # torch.from_numpy wants a writable buffer (files read as read-only)
            image = image.copy()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ExportError(f"exported model '{self.path}' takes an RGB uint8 image (H, W, 3), got an array of "
                              f"shape {image.shape} and dtype {image.dtype}")
        if self.format == "onnx":
            boxes, scores, labels = self._session.run(None, {"image": image})
            return {"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                    "labels": torch.from_numpy(labels)}
        with torch.inference_mode():
            boxes, scores, labels = self._module(torch.from_numpy(image))
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def __repr__(self) -> str:
        return f"ExportedModel('{self.path}', format={self.format}, classes={self.classes})"


def load_exported(path: str, *, num_threads: Optional[int] = None) -> ExportedModel:
    """Load an exported detector (.onnx or TorchScript .pt) for :meth:`ExportedModel.detect`."""
    return ExportedModel(path, num_threads=num_threads)
