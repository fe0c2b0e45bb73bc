"""Box sanitation shared by every data set: drop degenerate boxes, clip, drop exact duplicates.

Boxes arrive here already converted to detkit's convention (float32 x1, y1, x2, y2 in continuous
absolute pixel coordinates, see voc.py / coco.py for the conversions). Every change is counted
in the data set's :class:`~detkit.data.report.DataReport`; nothing is fixed silently.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from detkit.data.report import DataReport
from detkit.ops.boxes import box_iou

__all__ = ["sanitize_boxes", "NEAR_DUPLICATE_IOU"]

# Two boxes of the same class overlapping at least this much are reported as near-duplicates
# (kept: they may be real, e.g. touching cells; only a person can tell).
NEAR_DUPLICATE_IOU = 0.9


def _drop_exact_duplicates(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Keep mask of the first occurrence of each (label, x1, y1, x2, y2)."""
    keep = np.ones(len(boxes), dtype=bool)
    seen = set()
    for i in range(len(boxes)):
        key = (int(labels[i]), *boxes[i].tolist())
        if key in seen:
            keep[i] = False
        seen.add(key)
    return keep


def _count_near_duplicates(boxes: np.ndarray, labels: np.ndarray) -> int:
    """Number of pairs of same-label boxes with IoU >= NEAR_DUPLICATE_IOU."""
    if len(boxes) < 2:
        return 0
    iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy()  # (N, N)
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    return int(np.count_nonzero((iou >= NEAR_DUPLICATE_IOU) & same & upper))


def sanitize_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    size: Tuple[int, int],
    report: DataReport,
    where: str,
) -> Tuple[np.ndarray, np.ndarray]:
    """Drop degenerate boxes, clip the others to the image, drop exact duplicates; count it all.

    Args:
        boxes: (N, 4) x1, y1, x2, y2 in absolute continuous pixel coordinates.
        labels: (N,) int64 class labels (for ignore regions: the class of the region).
        size: (h, w) of the image, in the frame the boxes are given in.
        report: receives the counts (degenerate_dropped, clipped, duplicate_dropped, near_duplicate).
        where: the annotation file (and image) named in the report's examples.

    Returns:
        boxes float32 (M, 4) with 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, labels int64 (M,).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    h, w = size
    finite = np.isfinite(boxes).all(axis=1)
    valid = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    for i in np.flatnonzero(~valid):
        report.add("degenerate_dropped", example=f"{where}: {boxes[i].tolist()}",
                   detail="non-finite" if not finite[i] else "zero or negative area")
    boxes, labels = boxes[valid], labels[valid]

    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, w)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, h)
    changed = (clipped != boxes).any(axis=1)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    for i in np.flatnonzero(changed & inside):
        report.add("clipped", example=f"{where}: {boxes[i].tolist()} in {w}x{h}")
    for i in np.flatnonzero(~inside):
        report.add("degenerate_dropped", example=f"{where}: {boxes[i].tolist()} in {w}x{h}",
                   detail="entirely outside the image")
    boxes, labels = clipped[inside].astype(np.float32), labels[inside]

    keep = _drop_exact_duplicates(boxes, labels)
    for i in np.flatnonzero(~keep):
        report.add("duplicate_dropped", example=f"{where}: {boxes[i].tolist()}")
    boxes, labels = boxes[keep], labels[keep]
    near = _count_near_duplicates(boxes, labels)
    if near:
        report.add("near_duplicate", near, example=where)
    return np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4), labels
