"""The per-image box sanitation detkit had before detkit/data/sanitize.py became one vectorised
implementation (a Python loop over boxes, torch's box_iou for near-duplicates): the oracle that
tests/data/test_scale_index.py holds sanitize_boxes and sanitize_groups to, and that
tests/data/coco_reference.py reads COCO with."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from detkit.data.report import DataReport
from detkit.data.sanitize import CLIP_TOLERANCE_PX, NEAR_DUPLICATE_IOU
from detkit.ops.boxes import box_iou


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


def reference_sanitize_boxes(boxes: np.ndarray, labels: np.ndarray, size: Tuple[int, int], report: DataReport,
                             where: str) -> Tuple[np.ndarray, np.ndarray]:
    """What sanitize_boxes returned and reported: boxes float32 (M, 4), labels int64 (M,)."""
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
    clipped += 0.0  # -0.0 -> 0.0
    # counted only when reaching CLIP_TOLERANCE_PX or more outside (sub-pixel overshoot is clipped uncounted)
    far_out = (np.abs(clipped - boxes) >= CLIP_TOLERANCE_PX).any(axis=1)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    for i in np.flatnonzero(far_out & inside):
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
