"""Box sanitation shared by every data set: drop degenerate boxes, clip, drop exact duplicates.

Boxes arrive here already converted to detkit's convention (float32 x1, y1, x2, y2 in continuous
absolute pixel coordinates, see voc.py / coco.py for the conversions). Every change is counted
in the data set's :class:`~detkit.data.report.DataReport`; nothing is fixed silently, except clipping
a box that reaches less than CLIP_TOLERANCE_PX outside its image (see there).

There is one implementation, vectorised over images: :func:`sanitize_groups` applies the rules to
the boxes of many images at once (the COCO reader passes all of COCO's 860k boxes in one call), and
:func:`sanitize_boxes` (the VOC and YOLO readers, one image at a time) is its one-group case. The
rules, in this order, each written once below:

    1. degenerate (:func:`_degenerate`): a non-finite coordinate or no area -> dropped
    2. clip (:func:`_clip`): clipped to the image, counted when it reached CLIP_TOLERANCE_PX (1 px) or
       more outside (sub-pixel overshoot is rounding in the label file, not a flaw); left without
       area (entirely outside) -> dropped
    3. exact duplicates (:func:`_exact_duplicates`): the same label and float32 coordinates as an
       earlier box of the image -> dropped
    4. near-duplicates (:func:`_near_duplicate_counts`): pairs of boxes of one label with
       IoU >= NEAR_DUPLICATE_IOU -> counted, kept
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Tuple

import numpy as np

from detkit.data.report import DataReport

__all__ = ["sanitize_boxes", "sanitize_groups", "NEAR_DUPLICATE_IOU", "CLIP_TOLERANCE_PX"]

# Two boxes of the same class overlapping at least this much are reported as near-duplicates
# (kept: they may be real, e.g. touching cells; only a person can tell).
NEAR_DUPLICATE_IOU = 0.9

# A box reaching less than this many pixels outside its image (its largest overshoot over the four
# sides) is clipped without being counted as "clipped"; from this far out it is counted. Why 1 px:
# - below it lies rounding, not annotation: YOLO labels written with 6 decimals are off by up to
#   5e-7 of the image side (0.005 px on a 10000 px image; 1.0000004 becomes an overshoot of ~1e-4 px
#   once denormalised), COCO's float boxes by far less, and converting between formats adds float
#   error; none of it is a flaw to show a user, and clipping it moves an edge by less than a pixel,
#   below what any annotation is precise to, over image area that does not exist;
# - from it on lie real flaws: integer coordinates (VOC) only ever overshoot by whole pixels, so a
#   VOC xmin of 0 (0-based by mistake) or an xmax of width + 1 is still counted, as is any box a
#   person drew past the border.
CLIP_TOLERANCE_PX = 1.0


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
    kept, out = sanitize_groups(boxes, labels, np.zeros(len(boxes), np.int64), np.asarray([size]),
                                lambda g: where, report)
    return out, labels[kept]


def sanitize_groups(boxes: np.ndarray, labels: np.ndarray, group: np.ndarray, sizes: np.ndarray,
                    where: Callable[[int], str], report: DataReport) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`sanitize_boxes` of many images at once, with the same results and the same report.

    A group is what one :func:`sanitize_boxes` call sees (one image's boxes, or its ignore regions);
    boxes of a group keep their order. The report receives the counts, examples (in the order of the
    per-group calls: by group, then as the rules meet them) and details that calling sanitize_boxes
    on every group in increasing group order gives.

    Args:
        boxes: (B, 4) x1, y1, x2, y2 (float64 as converted); labels: (B,) int64; group: (B,) int64.
        sizes: (number of groups, 2) (h, w) of each group's image.
        where: group -> the text naming it in the report's examples (sanitize_boxes' ``where``).

    Returns:
        (kept indices int64 (M,) into the input, in input order, their clipped boxes float32 (M, 4)).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    group = np.asarray(group, dtype=np.int64).reshape(-1)
    sizes = np.asarray(sizes).reshape(-1, 2)
    events: dict = {}  # kind -> list of (group, rule, index, example style, detail)

    def note(kind, idx, rule, style, detail=None):
        for i in idx:
            events.setdefault(kind, []).append((int(group[i]), rule, int(i), style, detail))

    finite, valid = _degenerate(b)
    bad = np.flatnonzero(~valid)
    note("degenerate_dropped", bad[~finite[bad]], 0, "box", "non-finite")
    note("degenerate_dropped", bad[finite[bad]], 0, "box", "zero or negative area")
    clipped, far_out, inside = _clip(b, sizes[group].astype(np.float64))
    note("clipped", np.flatnonzero(valid & far_out & inside), 1, "box_in")
    note("degenerate_dropped", np.flatnonzero(valid & ~inside), 2, "box_in", "entirely outside the image")
    kept = np.flatnonzero(valid & inside)
    out = clipped[kept].astype(np.float32)

    duplicate = _exact_duplicates(group[kept], labels[kept], out)
    note("duplicate_dropped", kept[duplicate], 3, "box32")
    boxes32_of = dict(zip(kept[duplicate].tolist(), out[duplicate]))
    final, out = kept[~duplicate], out[~duplicate]

    for g, n in zip(*_near_duplicate_counts(group[final], labels[final], out)):
        events.setdefault("near_duplicate", []).append((int(g), 4, -1, "where", int(n)))

    def example(g: int, i: int, style: str) -> str:
        if style == "box":
            return f"{where(g)}: {b[i].tolist()}"
        if style == "box_in":
            return f"{where(g)}: {b[i].tolist()} in {int(sizes[g, 1])}x{int(sizes[g, 0])}"
        return f"{where(g)}: {boxes32_of[i].tolist()}"

    _report_events(events, report, where, example)
    return final, out


# --------------------------------------------------------------------------- the rules
def _degenerate(b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rule 1 on float64 (B, 4): (finite bool (B,), valid bool (B,): finite with x2 > x1 and y2 > y1)."""
    finite = np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore"):
        valid = finite & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return finite, valid


def _clip(b: np.ndarray, hw: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule 2: float64 (B, 4) clipped to float64 (B, 2) (h, w) of each box's image, as
    (clipped float64 (B, 4), far_out bool (B,): it reached CLIP_TOLERANCE_PX or more outside, i.e. a
    coordinate moved that much (counted; every box is clipped), inside bool (B,): the clipped box still
    has area)."""
    clipped = b.copy()
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0.0, hw[:, 1:2])
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0.0, hw[:, 0:1])
    clipped += 0.0  # -0.0 -> 0.0 (np.clip keeps the sign of a zero or not, depending on its code path)
    with np.errstate(invalid="ignore"):  # non-finite boxes (dropped by rule 1) compare False
        far_out = (np.abs(clipped - b) >= CLIP_TOLERANCE_PX).any(axis=1)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, far_out, inside


def _exact_duplicates(group: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Rule 3: bool (M,), True where (group, label, x1, y1, x2, y2) repeats an earlier box's.

    Args: group, labels: int64 (M,); boxes: float32 (M, 4) clipped (compared in float32, as stored).
    """
    position = np.arange(len(boxes))
    # Sorted by (group, label, coordinates, position): equal keys are neighbours, the first one first.
    order = np.lexsort((position, boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], labels, group))
    repeat = np.zeros(len(boxes), dtype=bool)
    if len(boxes) > 1:
        cur, prev = order[1:], order[:-1]
        repeat[cur] = ((group[cur] == group[prev]) & (labels[cur] == labels[prev])
                       & (boxes[cur] == boxes[prev]).all(axis=1))
    return repeat


def _near_duplicate_counts(group: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rule 4: (groups int64 (K,), pair counts int64 (K,)) of the groups that hold pairs of boxes of
    one label with IoU >= NEAR_DUPLICATE_IOU (each unordered pair counted once).

    Args: group, labels: int64 (M,); boxes: float32 (M, 4).
    """
    order = np.lexsort((np.arange(len(boxes)), labels, group))
    first, second = _pairs_within_runs(group[order], labels[order])
    iou = _pair_iou_float32(boxes[order[first]], boxes[order[second]])
    return np.unique(group[order[first[iou >= NEAR_DUPLICATE_IOU]]], return_counts=True)


def _pairs_within_runs(*keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every (i, j), i < j, of positions equal in all `keys` (int64 (B,) each, sorted jointly)."""
    n = len(keys[0])
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new_run = np.zeros(n, dtype=bool)
    new_run[0] = True
    for key in keys:
        new_run[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(new_run)
    lengths = np.diff(np.r_[starts, n])
    run_end = np.repeat(starts + lengths, lengths)  # (B,) one past the end of each position's run
    later = run_end - np.arange(n) - 1  # partners after each position
    first = np.repeat(np.arange(n), later)
    pair_start = np.cumsum(later) - later
    second = first + 1 + (np.arange(len(first)) - np.repeat(pair_start, later))
    return first, second


def _pair_iou_float32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of `a` with row i of `b` (float32 (P, 4) each), with box_iou's float32 arithmetic
    (the same operations in the same order, so a pair on the threshold lands on the same side)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = np.maximum(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), np.float32(0))
    inter = wh[:, 0] * wh[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a + area_b - inter)


# --------------------------------------------------------------------------- the report
def _report_events(events: dict, report: DataReport, where: Callable[[int], str],
                   example: Callable[[int, int, str], str]) -> None:
    """Add every kind's events to `report` as the per-group calls would have, one add_counted per kind.

    Args:
        events: kind -> list of (group, rule, box index, example style, detail); near_duplicate
            entries carry the group's pair count as their detail.
        example: (group, box index, style) -> the example text of one event.
    """
    for kind, entries in events.items():
        entries.sort(key=lambda e: (e[0], e[1], e[2]))  # by group, then rule, then box: the per-group order
        if kind == "near_duplicate":
            for g, _, _, _, n in entries:
                report.add(kind, n, example=where(g))
            continue
        details = Counter(e[4] for e in entries if e[4] is not None)
        examples = [example(g, i, style) for g, _, i, style, _ in entries[:report.max_examples]]
        report.add_counted(kind, len(entries), examples=examples, details=details)
