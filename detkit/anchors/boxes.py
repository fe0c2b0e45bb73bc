"""The boxes anchor fitting sees: the training set's boxes after the training resize, their
mirror images under the configured flips, and their offsets to every level's anchor grid.

Shape shorthand: N boxes, L levels. Fitting sees the boxes as the RPN will: after the resize, at
their positions on each level's anchor grid, and mirrored as well when the augmentation flips
images (``augment.hflip_prob`` / ``vflip_prob`` > 0), since a flipped box sits at another grid offset.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from detkit.anchors.fit import MIN_FIT_SIDE
from detkit.anchors.metrics import BoxSet, grid_offsets
from detkit.anchors.setup import AnchorSetup
from detkit.data.resized_boxes import resized_annotations

__all__ = ["collect_training_boxes", "with_flips", "fit_inputs", "batch_fit_boxes"]


def collect_training_boxes(dataset, setup: AnchorSetup) -> BoxSet:
    """Every box of `dataset` after the training resize (one entry per image and scale of data.min_size).

    At most ``model.anchors.max_fit_boxes`` boxes are kept (a seeded sample of them beyond that).
    """
    entries = resized_annotations(dataset, None, min_size=setup.min_size, max_size=setup.max_size)
    boxes = BoxSet.from_images([e["boxes"] for e in entries], [e["size"] for e in entries])
    return boxes.subsample(setup.settings.max_fit_boxes, setup.settings.seed)


def with_flips(boxes: BoxSet, *, hflip: bool, vflip: bool) -> BoxSet:
    """`boxes` plus their mirror images under every flip (and both flips) the augmentation may apply."""
    sizes = boxes.image_sizes[boxes.image_index].astype(np.float64)  # (N, 2) as (h, w)
    x1, y1, x2, y2 = boxes.boxes.T
    h, w = sizes[:, 0], sizes[:, 1]
    parts = []
    for fx in (False, True) if hflip else (False,):
        for fy in (False, True) if vflip else (False,):
            xs = (w - x2, w - x1) if fx else (x1, x2)
            ys = (h - y2, h - y1) if fy else (y1, y2)
            parts.append(np.stack((xs[0], ys[0], xs[1], ys[1]), axis=1))  # 4 x (N,) -> (N, 4)
    return BoxSet(boxes=np.concatenate(parts), image_index=np.tile(boxes.image_index, len(parts)),
                  image_sizes=boxes.image_sizes)


def fit_inputs(setup: AnchorSetup, boxes: BoxSet) -> tuple:
    """What the kmeans and learned fits see: `boxes` plus their mirror images under the configured
    flips, as (wh float64 (N, 2), offsets float64 (N, L, 2) to the nearest anchor centre of every level)."""
    fit_set = with_flips(boxes, hflip=setup.hflip, vflip=setup.vflip)
    return fit_set.wh, grid_offsets(fit_set, list(setup.strides), offset=setup.offset,
                                    size_divisible=setup.size_divisible)


def batch_fit_boxes(setup: AnchorSetup, targets: Sequence[dict], image_sizes: Sequence[Sequence[int]]) -> tuple:
    """The boxes of one batch as the anchor fit wants them.

    Args:
        targets: per image a dict with ``boxes`` Tensor[M_i, 4] xyxy in resized image coordinates.
        image_sizes: (h, w) of each resized image (before batch padding).

    Returns:
        (wh float64 (N, 2), offsets float64 (N, L, 2)): sizes of the boxes with both sides >= MIN_FIT_SIDE
        and their distances to the nearest anchor centre of every level (as the offline fit).
    """
    boxes = BoxSet.from_images([t["boxes"].detach().cpu().numpy() for t in targets],
                               [tuple(int(v) for v in s) for s in image_sizes])
    offsets = grid_offsets(boxes, list(setup.strides), offset=setup.offset, size_divisible=setup.size_divisible)
    keep = (boxes.wh >= MIN_FIT_SIDE).all(axis=1)
    return boxes.wh[keep], offsets[keep]
