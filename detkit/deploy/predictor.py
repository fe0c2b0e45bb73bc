"""A trained detector ready to use from Python: the one inference entry point.

    model = load_model("runs/synthetic/best.pt")
    model.predict(array_or_path)                  # one image: a dict of boxes, scores, labels, names
    model.predict([a, b])                         # a list of images: a list of dicts
    model.predict("photos/")                      # a folder or a glob pattern: one dict per image file
    model.predict_files(["photos/"], output_dir)  # drawn images + detections.json, as `detkit infer`
    model.predict_files(["clip.mp4"], output_dir)  # an annotated clip.mp4 + clip.jsonl, as `detkit infer`

The predictor applies the checkpoint's test-time resize (``data.test_min_size`` / ``max_size``) and
returns boxes in the pixels of the image it was given.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from detkit.data.image_io import read_image
from detkit.data.transforms import build_transforms
from detkit.deploy.infer_files import expand_inputs, image_to_input, predict_files
from detkit.errors import DataError
from detkit.runtime.device import resolve_device
from detkit.runtime.precision import Precision, autocast_of
from detkit.vis import DEFAULT_DRAW_THRESHOLD
from detkit.weights.trained_model import load_trained_models, prepare_inference

__all__ = ["Predictor", "load_model"]

ImageLike = Union[str, os.PathLike, np.ndarray]


class Predictor:
    """A detector with its classes and its test-time transform.

    Attributes:
        model: the :class:`detkit.modeling.detector.Detector` (or a
            :class:`detkit.modeling.ensemble.DetectorEnsemble`), in eval mode on ``device``.
        cfg: the checkpoint's config (with any overrides applied).
        classes: class names; label ``k`` (1..K) is ``classes[k - 1]``.
        precision: the autocast of :meth:`predict` (``eval.precision``, resolved; None = fp32).
        category_ids: the data set's category id of each class (detections.json's ``category_id``).
    """

    def __init__(self, model: torch.nn.Module, cfg, classes: Sequence[str], device: torch.device,
                 precision: Optional[Precision] = None, category_ids: Optional[Sequence[int]] = None) -> None:
        self.model, self.cfg, self.classes, self.device = model, cfg, list(classes), device
        self.precision = precision
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(classes) + 1))
        self.transform = build_transforms(cfg.data, train=False, seed=0)

    def _tensor(self, image: ImageLike) -> tuple:
        if isinstance(image, (str, os.PathLike)):
            image = read_image(os.fspath(image))
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"predict: expected an RGB image as uint8 (H, W, 3) or a file path, got an array "
                            f"of shape {image.shape} and dtype {image.dtype}")
        return image_to_input(image, self.transform).to(self.device), (int(image.shape[0]), int(image.shape[1]))

    @torch.inference_mode()
    def predict(self, images: Union[ImageLike, Sequence[ImageLike]],
                score_threshold: Optional[float] = None) -> Union[Dict[str, object], List[Dict[str, object]]]:
        """Detect objects in one image or a list of them.

        Args:
            images: a file path, an RGB uint8 array (H, W, 3), or a list of them; or a folder or a glob
                pattern (its image files, sorted), which gives a list with the ``"file"`` of each entry.
            score_threshold: keep detections scoring at least this (default: the model's
                ``model.roi_head.score_thresh``).
        Returns:
            per image ``{"boxes": float32 (N, 4) xyxy in the input's pixels, "scores": float32 (N,),
            "labels": int64 (N,) in 1..K, "class_names": N names}`` (a list for a list input).
        """
        if isinstance(images, (str, os.PathLike)) and not os.path.isfile(images):
            paths = self._expand([os.fspath(images)])
            found = self.predict(paths, score_threshold) if paths else []
            return [dict(entry, file=path) for path, entry in zip(paths, found)]
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        batch = [self._tensor(image) for image in ([images] if single else images)]
        outputs = []
        if batch:
            with autocast_of(self.precision):
                outputs = self.model([t for t, _ in batch], orig_sizes=[size for _, size in batch])
        found = []
        for out in outputs:
            keep = out["scores"] >= (score_threshold if score_threshold is not None else -1.0)
            labels = out["labels"][keep].cpu().numpy().astype(np.int64)
            found.append({"boxes": out["boxes"][keep].cpu().numpy().astype(np.float32),
                          "scores": out["scores"][keep].cpu().numpy().astype(np.float32), "labels": labels,
                          "class_names": [self.classes[int(k) - 1] for k in labels]})
        return found[0] if single else found

    @staticmethod
    def _expand(inputs: Sequence[str], videos: bool = False) -> List[str]:
        paths, problems = expand_inputs(inputs, videos=videos)
        if problems and not paths:
            raise DataError("predict: " + "; ".join(f"'{item}': {reason}" for item, reason in problems))
        return paths

    def predict_files(self, inputs: Sequence[str], output_dir: str, *, batch_size: int = 1,
                      score_threshold: Optional[float] = None, progress: bool = True, log=print,
                      draw_threshold: float = DEFAULT_DRAW_THRESHOLD, every: int = 1) -> dict:
        """Detect on image and video files, folders (their images and videos) and glob patterns; write
        each image with its boxes drawn and ``detections.json`` (COCO results with file names), and for
        each video an annotated ``<stem>.mp4`` and ``<stem>.jsonl``, into ``output_dir``, as `detkit infer`
        does. Only detections scoring at least ``draw_threshold`` are drawn; ``every``: detect on every
        N-th video frame.

        A file that cannot be read is reported and skipped. Returns ``{"processed": images, "failed":
        [(path, reason), ...], "detections": n, "videos": n, "frames": n}``.
        """
        return predict_files(self.model, self.cfg, self.classes, self.category_ids,
                             self._expand(list(inputs), videos=True), output_dir=output_dir, batch_size=batch_size,
                             device=str(self.device), progress=progress, log=log, precision=self.precision,
                             score_threshold=score_threshold, draw_threshold=draw_threshold, every=every)


def load_model(checkpoint_path: Union[str, Sequence[str]], *, device: str = "cpu", overrides: Sequence[str] = (),
               log=print) -> Predictor:
    """The trained detector of a checkpoint (last.pt / best.pt), ready to :meth:`Predictor.predict`; given
    a list of checkpoints of the same classes, their ensemble (detkit.modeling.ensemble), which the first
    checkpoint's settings post-process.

    ``overrides`` (``dotted.key=value``) change inference settings, e.g. ``model.roi_head.score_thresh=0.3``,
    ``eval.precision=fp32`` or ``eval.fold_bn=false`` (BatchNorm is folded into the convolutions by default).
    """
    resolve_device(device, key="device")  # a clear error before the checkpoint is read
    model, cfg, ckpt = load_trained_models(checkpoint_path, torch.device(device), list(overrides))
    precision = prepare_inference(model, cfg, torch.device(device), log=log)
    return Predictor(model, cfg, ckpt["classes"], torch.device(device), precision,
                     category_ids=ckpt.get("category_ids"))
