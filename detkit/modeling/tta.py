"""Test-time augmentation views: where each view of an image puts a box, and back.

A view is the image resized by a scale factor and optionally mirrored left to right. The RoI heads
classify and regress every proposal once per view, pooling it from that view's feature maps at the
place the view moved it to, and average the class probabilities and the boxes (mapped back to the
image) per proposal before NMS (:meth:`detkit.modeling.roi_head.RoIHead.postprocess_views`). Each
view refines the same detections instead of adding duplicates to suppress.

Shape shorthand: B images, R_i boxes of image i, V views, C channels, H/W padded feature sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["View", "ViewBatch", "average", "hflip_views", "mirror_boxes", "tta_views"]


@dataclass(frozen=True)
class View:
    """One test-time view: the image resized by ``scale`` (relative to the test size), mirrored when ``flip``."""

    scale: float = 1.0
    flip: bool = False


def tta_views(scales: Sequence[float], hflip: bool) -> List[View]:
    """The views of ``model.test_scales`` x ``model.test_hflip``, the base view (scale 1, not mirrored) first.

    >>> tta_views([1.0, 1.25], True)
    [View(scale=1.0, flip=False), View(scale=1.0, flip=True), View(scale=1.25, flip=False), View(scale=1.25, flip=True)]
    """
    scales = [float(s) for s in scales]
    if 1.0 not in scales:
        raise ValueError(f"test scales {scales} must include 1.0: the proposals come from the image at scale 1")
    ordered = [1.0] + [s for s in scales if s != 1.0]
    return [View(scale, flip) for scale in ordered for flip in ((False, True) if hflip else (False,))]


def mirror_boxes(boxes: Tensor, width: int) -> Tensor:
    """Boxes Tensor[N, 4] (x1, y1, x2, y2) of an image of ``width`` -> the same boxes in its left-right mirror image."""
    return torch.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=1)


@dataclass
class ViewBatch:
    """A batch of B images seen in one view: its feature maps and each image's size in the view.

    Attributes:
        features: name -> Tensor[B, C, H, W], the backbone's maps of the B images in this view.
        sizes: B x (h, w): each image's size in this view (before padding).
        base_sizes: B x (h, w): each image's size in the base view, whose coordinates the boxes are given in.
        flip: whether the view is the mirror image.
    """

    features: Dict[str, Tensor]
    sizes: Sequence[Tuple[int, int]]
    base_sizes: Sequence[Tuple[int, int]]
    flip: bool = False

    def _factors(self, i: int) -> Tuple[float, float]:
        (h, w), (bh, bw) = self.sizes[i], self.base_sizes[i]
        return w / bw, h / bh

    @property
    def identity(self) -> bool:
        """Whether the view leaves every box where it is (the base view)."""
        return not self.flip and all(tuple(s) == tuple(b) for s, b in zip(self.sizes, self.base_sizes))

    def to_view(self, boxes: Sequence[Tensor]) -> List[Tensor]:
        """B x Tensor[R_i, 4] in base-view pixels -> the same boxes in this view's pixels."""
        return list(boxes) if self.identity else [self.image_to_view(b, i) for i, b in enumerate(boxes)]

    def from_view(self, boxes: Sequence[Tensor]) -> List[Tensor]:
        """B x Tensor[R_i, 4] in this view's pixels -> base-view pixels (:meth:`to_view`'s inverse)."""
        return list(boxes) if self.identity else [self.image_from_view(b, i) for i, b in enumerate(boxes)]

    def image_to_view(self, boxes: Tensor, i: int) -> Tensor:
        """Tensor[N, 4] of image i in base-view pixels -> in this view's pixels (scaled, then mirrored)."""
        sx, sy = self._factors(i)
        if (sx, sy) != (1.0, 1.0):
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
        return mirror_boxes(boxes, self.sizes[i][1]) if self.flip else boxes

    def image_from_view(self, boxes: Tensor, i: int) -> Tensor:
        """Tensor[N, 4] of image i in this view's pixels -> base-view pixels (mirrored back, then unscaled)."""
        if self.flip:
            boxes = mirror_boxes(boxes, self.sizes[i][1])
        sx, sy = self._factors(i)
        return boxes if (sx, sy) == (1.0, 1.0) else boxes / boxes.new_tensor([sx, sy, sx, sy])


def average(tensors: Sequence[Tensor]) -> Tensor:
    """The mean of V same-shaped tensors, summed in order ((a + b) / 2 for two, bit for bit)."""
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total / len(tensors) if len(tensors) > 1 else total


def hflip_views(features: Dict[str, Tensor], image_sizes: Sequence[Tuple[int, int]]) -> List[ViewBatch]:
    """features name -> Tensor[2B, C, H, W] of B images then their mirror images -> the two ViewBatch."""
    num = len(image_sizes)
    return [ViewBatch({k: f[:num] for k, f in features.items()}, image_sizes, image_sizes, flip=False),
            ViewBatch({k: f[num:] for k, f in features.items()}, image_sizes, image_sizes, flip=True)]
