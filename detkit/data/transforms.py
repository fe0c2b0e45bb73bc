"""Augmentation and resizing: albumentations pipelines built from the config, then torchvision's resize.

A transform maps a sample (see detkit/data/dataset.py) to a sample whose image is resized and
whose ``boxes`` / ``ignore_boxes`` moved with it, and adds ``sample["scale"] = (sy, sx)``, the
factors of the final resize (resized / pre-resize size per axis).

Train preset (each step only when its probability / range is set)
    horizontal flip (``augment.hflip_prob``), vertical flip (``vflip_prob``), a bbox-safe random
    crop that keeps every box (``crop_prob``, albumentations.BBoxSafeRandomCrop), colour jitter
    (``color_jitter_prob``: brightness / contrast / saturation 0.2, hue 0.02), then the resize with
    S drawn from ``min_size`` (multi-scale training) and the scale multiplied by a factor drawn from
    ``scale_jitter`` = [low, high]. Boxes go through ``BboxParams(format='pascal_voc',
    label_fields=['labels', 'is_ignore'], min_visibility, min_area, clip=True)``, so a box cut down
    by a crop below ``min_visibility`` of its area, or below ``min_area`` px², is dropped.
    Ignore regions ride along as boxes flagged ``is_ignore`` and are split off again afterwards.
Test preset
    the resize only, with S = ``test_min_size`` (default: the last entry of ``min_size``).

Resize rule (exactly torchvision's GeneralizedRCNNTransform): scale = min(S / shorter side,
max_size / longer side); new size = floor(h * scale), floor(w * scale) (cv2 bilinear); boxes are
multiplied by (new_w / w, new_h / h). The size is computed here, not by albumentations'
resize transforms, whose rounding policy differs.

Randomness: a transform draws from generators seeded at construction (``seed``), or, when called
with ``rng_seed``, reseeds everything from it first. The loader passes
``rng_seed = (seed, epoch, index)``, so an image's augmentation depends only on the seed, the
epoch and its index, not on the number of worker processes or the order of the batches.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import albumentations as A
import cv2
import numpy as np

from detkit.config import DataConfig

__all__ = ["DetectionTransform", "build_transforms", "resize_scale", "resized_size", "test_min_size"]

SeedLike = Union[int, Sequence[int]]


def resize_scale(size: Tuple[int, int], min_size: float, max_size: float) -> float:
    """torchvision's resize factor: min(min_size / shorter side, max_size / longer side). size: (h, w)."""
    h, w = size
    return min(float(min_size) / min(h, w), float(max_size) / max(h, w))


def resized_size(size: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """(floor(h * scale), floor(w * scale)), at least 1 px: the size torchvision's interpolate gives."""
    h, w = size
    return max(1, int(math.floor(h * scale))), max(1, int(math.floor(w * scale)))


def test_min_size(data_cfg: DataConfig) -> int:
    """The shorter-side size used at evaluation: data.test_min_size, else the last of data.min_size."""
    return int(data_cfg.test_min_size if data_cfg.test_min_size is not None else data_cfg.min_size[-1])


def _augmentations(data_cfg: DataConfig) -> List[A.BasicTransform]:
    aug = data_cfg.augment
    steps: List[A.BasicTransform] = []
    if aug.hflip_prob > 0:
        steps.append(A.HorizontalFlip(p=aug.hflip_prob))
    if aug.vflip_prob > 0:
        steps.append(A.VerticalFlip(p=aug.vflip_prob))
    if aug.crop_prob > 0:
        steps.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=aug.crop_prob))
    if aug.color_jitter_prob > 0:
        steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02,
                                   p=aug.color_jitter_prob))
    return steps


class DetectionTransform:
    """Augment (train) and resize one sample. Build it with :func:`build_transforms`.

    Args:
        augmentations: albumentations transforms applied before the resize (empty for test).
        min_sizes: candidate shorter-side sizes S (one is drawn per call when there are several).
        max_size: the longer side is at most this (before scale jitter).
        scale_jitter: (low, high) factor range multiplied into the resize scale, or None.
        min_visibility, min_area: albumentations' box filters (used when augmentations is not empty).
        seed: seed of the generators used when no per-call rng_seed is given.
        resize: False leaves the image at its size (scale 1): the detector resizes it instead
            (``data.test_resize = "model"``).
    """

    def __init__(self, *, augmentations: Sequence[A.BasicTransform], min_sizes: Sequence[int], max_size: int,
                 scale_jitter: Optional[Sequence[float]] = None, min_visibility: float = 0.0,
                 min_area: float = 0.0, seed: SeedLike = 0, resize: bool = True) -> None:
        self.resize = bool(resize)
        self.min_sizes = [int(s) for s in min_sizes]
        self.max_size = int(max_size)
        self.scale_jitter = tuple(scale_jitter) if scale_jitter is not None else None
        self.compose = None
        if augmentations:
            bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels", "is_ignore"],
                                       min_visibility=min_visibility, min_area=min_area, clip=True,
                                       filter_invalid_bboxes=True)
            self.compose = A.Compose(list(augmentations), bbox_params=bbox_params, seed=0)
        self.reseed(seed)

    def reseed(self, seed: SeedLike) -> None:
        """Reseed the resize generator and every albumentations transform (each its own stream)."""
        entropy = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        n = 1 + (1 + len(self.compose.transforms) if self.compose is not None else 0)
        states = np.random.SeedSequence(entropy).generate_state(n)
        self.rng = np.random.default_rng(int(states[0]))
        if self.compose is not None:
            self.compose.set_random_seed(int(states[1]))
            # Compose.set_random_seed gives every transform the same seed (so two flips with the
            # same p would fire together): give each its own stream instead.
            for t, s in zip(self.compose.transforms, states[2:]):
                t.set_random_seed(int(s))

    def _augment(self, sample: dict) -> dict:
        boxes, ignore = sample["boxes"], sample["ignore_boxes"]
        out = self.compose(
            image=sample["image"],
            bboxes=np.concatenate([boxes, ignore]).astype(np.float32).reshape(-1, 4),
            labels=np.concatenate([sample["labels"], sample.get("ignore_labels", np.zeros(len(ignore), np.int64))]),
            is_ignore=np.concatenate([np.zeros(len(boxes), bool), np.ones(len(ignore), bool)]),
        )
        all_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        is_ignore = np.asarray(out["is_ignore"], dtype=bool).reshape(-1)
        sample["image"] = np.ascontiguousarray(out["image"])
        sample["boxes"], sample["labels"] = all_boxes[~is_ignore], labels[~is_ignore]
        sample["ignore_boxes"], sample["ignore_labels"] = all_boxes[is_ignore], labels[is_ignore]
        return sample

    def _resize(self, sample: dict) -> dict:
        image = sample["image"]
        h, w = image.shape[:2]
        # One RNG draw only for multi-scale training, so a single scale leaves the stream untouched.
        s = self.min_sizes[int(self.rng.integers(len(self.min_sizes)))] if len(self.min_sizes) > 1 \
            else self.min_sizes[0]
        scale = resize_scale((h, w), s, self.max_size)
        if self.scale_jitter is not None:
            scale *= float(self.rng.uniform(*self.scale_jitter))
        nh, nw = resized_size((h, w), scale) if self.resize else (h, w)
        if (nh, nw) != (h, w):
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        sy, sx = nh / h, nw / w
        factors = np.array([sx, sy, sx, sy], dtype=np.float32)
        for key, label_key in (("boxes", "labels"), ("ignore_boxes", "ignore_labels")):
            boxes = sample[key].reshape(-1, 4) * factors
            boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, nw)
            boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, nh)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            sample[key] = np.ascontiguousarray(boxes[keep], dtype=np.float32)
            if label_key in sample:
                sample[label_key] = sample[label_key][keep]
        sample["image"] = image
        sample["scale"] = (sy, sx)
        return sample

    def __call__(self, sample: dict, rng_seed: Optional[SeedLike] = None) -> dict:
        """Augment and resize `sample` (a new dict; the input arrays are not modified).

        Args:
            sample: a data set sample (image (H, W, 3) uint8, boxes (N, 4), labels (N,), ignore_boxes (G, 4), ...).
            rng_seed: reseed from this first (int or tuple of ints), for per-sample determinism.
        """
        if rng_seed is not None:
            self.reseed(rng_seed)
        sample = dict(sample)
        sample.setdefault("ignore_labels", np.zeros(len(sample["ignore_boxes"]), np.int64))
        if self.compose is not None:
            sample = self._augment(sample)
        return self._resize(sample)


def build_transforms(data_cfg: DataConfig, *, train: bool, seed: SeedLike = 0) -> DetectionTransform:
    """The train preset (augmentations + multi-scale resize) or the test preset (resize only)."""
    if train:
        return DetectionTransform(
            augmentations=_augmentations(data_cfg), min_sizes=data_cfg.min_size, max_size=data_cfg.max_size,
            scale_jitter=data_cfg.augment.scale_jitter, min_visibility=data_cfg.augment.min_visibility,
            min_area=data_cfg.augment.min_area, seed=seed)
    # data.test_resize = "model": the detector resizes the float image itself (torchvision's transform).
    return DetectionTransform(augmentations=[], min_sizes=[test_min_size(data_cfg)],
                              max_size=data_cfg.max_size, seed=seed, resize=data_cfg.test_resize == "pipeline")
