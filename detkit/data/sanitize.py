"""Box sanitation shared by every data set: drop degenerate boxes, clip, drop exact duplicates.

Boxes arrive here already converted to detkit's convention (float32 x1, y1, x2, y2 in continuous
absolute pixel coordinates, see voc.py / coco.py for the conversions). Every change is counted
in the data set's :class:`~detkit.data.report.DataReport`; nothing is fixed silently.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Tuple

import numpy as np
import torch

from detkit.data.report import DataReport
from detkit.ops.boxes import box_iou

__all__ = ["sanitize_boxes", "sanitize_groups", "NEAR_DUPLICATE_IOU"]

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
    clipped += 0.0  # -0.0 -> 0.0 (np.clip keeps the sign of a zero or not, depending on its code path)
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


def _pairs_within_runs(keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every (i, j), i < j, of positions with equal `keys` (sorted, nondecreasing int64 (B,))."""
    if len(keys) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, len(keys)])
    run_end = np.repeat(starts + lengths, lengths)  # (B,) one past the end of each position's run
    later = run_end - np.arange(len(keys)) - 1  # partners after each position
    first = np.repeat(np.arange(len(keys)), later)
    pair_start = np.cumsum(later) - later
    second = first + 1 + (np.arange(len(first)) - np.repeat(pair_start, later))
    return first, second


def _pair_iou_float32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of `a` with row i of `b` (float32 (P, 4) each), with box_iou's float32 arithmetic."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = np.maximum(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), np.float32(0))
    inter = wh[:, 0] * wh[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a + area_b - inter)


def sanitize_groups(boxes: np.ndarray, labels: np.ndarray, group: np.ndarray, sizes: np.ndarray,
                    where: Callable[[int], str], report: DataReport) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`sanitize_boxes` of many images at once, with the same results and the same report.

    A group is what one :func:`sanitize_boxes` call saw (one image's boxes, or its ignore regions);
    boxes of a group keep their order. The report receives the counts, examples (in the order of the
    per-group calls: by group, then as sanitize_boxes meets them) and details that calling
    sanitize_boxes on every group in increasing group order would give.

    Args:
        boxes: (B, 4) x1, y1, x2, y2 (float64 as converted); labels: (B,) int64; group: (B,) int64.
        sizes: (number of groups, 2) (h, w) of each group's image.
        where: group -> the text sanitize_boxes would have been given as ``where``.

    Returns:
        (kept indices int64 (M,) into the input, in input order, their clipped boxes float32 (M, 4)).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    group = np.asarray(group, dtype=np.int64).reshape(-1)
    sizes = np.asarray(sizes).reshape(-1, 2)
    events: dict = {}  # kind -> list of (group, phase, index, example, detail)

    def note(kind, idx, phase, example, detail=None):
        for i in idx:
            events.setdefault(kind, []).append((int(group[i]), phase, int(i), example, detail))

    finite = np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore"):
        valid = finite & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    bad = np.flatnonzero(~valid)
    note("degenerate_dropped", bad[~finite[bad]], 0, "box", "non-finite")
    note("degenerate_dropped", bad[finite[bad]], 0, "box", "zero or negative area")
    h, w = sizes[group, 0].astype(np.float64), sizes[group, 1].astype(np.float64)
    clipped = b.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, w[:, None])
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, h[:, None])
    clipped += 0.0  # as sanitize_boxes
    changed = (clipped != b).any(axis=1)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    note("clipped", np.flatnonzero(valid & changed & inside), 1, "box_in")
    note("degenerate_dropped", np.flatnonzero(valid & ~inside), 2, "box_in", "entirely outside the image")
    kept = np.flatnonzero(valid & inside)
    out = clipped[kept].astype(np.float32)

    # exact duplicates: the same (group, label, x1, y1, x2, y2) as an earlier kept box
    norm = out
    order = np.lexsort((kept, norm[:, 3], norm[:, 2], norm[:, 1], norm[:, 0], labels[kept], group[kept]))
    same = np.zeros(len(kept), dtype=bool)
    if len(kept) > 1:
        s = order
        same[s[1:]] = ((group[kept][s[1:]] == group[kept][s[:-1]]) & (labels[kept][s[1:]] == labels[kept][s[:-1]])
                       & (norm[s[1:]] == norm[s[:-1]]).all(axis=1))
    note("duplicate_dropped", kept[same], 3, "box32")
    boxes32_of = dict(zip(kept[same].tolist(), out[same]))
    final_pos = np.flatnonzero(~same)
    final, out = kept[final_pos], out[final_pos]

    # near duplicates: pairs of kept boxes of one group and label with IoU >= NEAR_DUPLICATE_IOU
    key_order = np.lexsort((final, labels[final], group[final]))
    run_key = group[final][key_order] * (int(labels.max(initial=0)) + 1) + labels[final][key_order]
    first, second = _pairs_within_runs(run_key)
    iou = _pair_iou_float32(out[key_order[first]], out[key_order[second]])
    near_groups = group[final][key_order[first[iou >= NEAR_DUPLICATE_IOU]]]
    for g, n in zip(*np.unique(near_groups, return_counts=True)):
        events.setdefault("near_duplicate", []).append((int(g), 4, -1, "where", int(n)))

    for kind, entries in events.items():
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        if kind == "near_duplicate":
            for g, _, _, _, n in entries:
                report.add(kind, n, example=where(g))
            continue
        details = Counter(e[4] for e in entries if e[4] is not None)
        examples = []
        for g, _, i, style, _ in entries[:report.max_examples]:
            if style == "box":
                examples.append(f"{where(g)}: {b[i].tolist()}")
            elif style == "box_in":
                examples.append(f"{where(g)}: {b[i].tolist()} in {int(sizes[g, 1])}x{int(sizes[g, 0])}")
            else:
                examples.append(f"{where(g)}: {boxes32_of[i].tolist()}")
        report.add_counted(kind, len(entries), examples=examples, details=details)
    return final, out
