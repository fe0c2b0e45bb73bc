"""Fused max-IoU matching of anchors to ground truth, without the A x M IoU matrix.

``match_max_iou`` returns exactly what ``torchvision.ops.box_iou(gt_boxes, anchors)`` followed by
``torchvision.models.detection._utils.Matcher(fg, bg, allow_low_quality_matches)`` gives, in
detkit's (matched_idxs, labels) form:

* IoU values are computed with torchvision's float operations in the input dtype
  (``inter = clamp(min(x2) - max(x1), 0) * clamp(min(y2) - max(y1), 0)``,
  ``iou = inter / (area_gt + area_anchor - inter)``), so they are bit-identical.
* Each anchor's best ground truth is the first index among equal maxima (torch.max); NaN IoU
  (two zero-area boxes) counts as the maximum, as in torch.max.
* Thresholds are compared in the input dtype (torch casts a Python float to the tensor's dtype):
  ``iou < bg`` -> negative (0), ``bg <= iou < fg`` -> ignored (-1), otherwise positive (1).
* Low-quality matches (torchvision's rule): every anchor whose IoU with some ground truth equals
  that ground truth's best IoU (exact equality, ties included) becomes positive and keeps its own
  best ground truth. Quirk kept on purpose: a ground truth that overlaps no anchor has best IoU 0,
  so every anchor then becomes positive (torchvision and Detectron2 do the same).
* float16 / bfloat16 are computed in float32 (torchvision has no half box_iou on the CPU path).

Algorithm: the anchors are indexed once in a multi-level grid by their centres (level l holds
anchors whose longer side is about ``c0 * 2**l``; the anchor indices are listed cell by cell,
so a row of cells is one contiguous run). Each ground truth then visits only the cells that
can hold an anchor overlapping it, computes those IoUs, and, because it sees every anchor with a
positive IoU, knows its best IoU at once and can mark its low-quality matches in the same step.
Anchors are visited ground truth by ground truth in index order with a strict ``>`` update, which
gives torch.max's first-index tie rule. Pairs without a positive intersection have IoU exactly 0,
which is what makes the pruning exact; when an anchor or ground truth has a zero, negative or
infinite area a dense A x M loop (still O(A + M) memory) reproduces torch's NaN semantics instead.
The kernels are single-threaded; their results do not depend on any thread setting.

CUDA (any non-CPU) tensors never go to these kernels: they take the torch implementation in
:mod:`detkit.ops.matching_torch` (same answers, chunked over the anchors, on the tensors' device).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch
from torch import Tensor

from detkit.ops.grid_cells import grid_cell, size_level
from detkit.ops.matching_torch import match_max_iou_torch, max_iof_torch, max_iou_stats_torch

__all__ = ["match_max_iou", "max_iou_stats", "max_iof"]

# Search windows are widened by this relative amount (plus the same fraction of the coordinate
# magnitude) so that float64 rounding of centres can never hide an overlapping anchor.
_WINDOW_SLACK = 1e-9


# --------------------------------------------------------------------------- geometry helpers
@nb.njit(cache=True, error_model="numpy", inline="always")
def _pair_iou(ax1, ay1, ax2, ay2, a_area, gx1, gy1, gx2, gy2, g_area, zero):
    """torchvision.ops.box_iou(gt, anchor) for one pair, in the boxes' dtype."""
    w = min(ax2, gx2) - max(ax1, gx1)
    h = min(ay2, gy2) - max(ay1, gy1)
    w = w if w > 0 else zero
    h = h if h > 0 else zero
    inter = w * h
    return inter / (g_area + a_area - inter)


@nb.njit(cache=True)
def _areas(boxes):
    """(x2 - x1) * (y2 - y1) in the boxes' dtype. boxes: (N, 4) -> (N,)."""
    n = boxes.shape[0]
    out = np.empty(n, boxes.dtype)
    for i in range(n):
        out[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
    return out


@nb.njit(cache=True)
def _all_proper(areas):
    """True when every area is positive and finite (then no IoU is NaN)."""
    for i in range(areas.shape[0]):
        if not (areas[i] > 0 and areas[i] < np.inf):
            return False
    return True




# --------------------------------------------------------------------------- anchor index
@nb.njit(cache=True)
def _index_boxes(boxes):
    """Multi-level grid of boxes (all with positive, finite area) by their centres.

    Returns (items (N,): box indices grouped by cell, by increasing index within a cell; starts
    (cells + 1,): cell c holds items[starts[c]:starts[c + 1]]; origin ox, oy; per level: inverse
    cell size, nx, ny, cell offset, largest width, largest height). Cells of one row of a level
    are consecutive, so a row range is one slice of items.
    """
    n = boxes.shape[0]
    ox, oy, mx, my = np.inf, np.inf, -np.inf, -np.inf
    smin, smax = np.inf, 0.0
    for i in range(n):
        x1, y1, x2, y2 = float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])
        cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
        ox, oy, mx, my = min(ox, cx), min(oy, cy), max(mx, cx), max(my, cy)
        side = max(x2 - x1, y2 - y1)
        smin, smax = min(smin, side), max(smax, side)
    c0 = max(smin, smax * 2.0 ** -20)
    nlev = 1
    while c0 * 2.0 ** (nlev - 1) < smax:
        nlev += 1
    sizes = np.empty(nlev)
    for lev in range(nlev):
        sizes[lev] = c0 * 2.0 ** lev
    key = np.empty(n, np.int64)   # the level first, the cell later
    population = np.zeros(nlev, np.int64)
    wmax = np.zeros(nlev)
    hmax = np.zeros(nlev)
    for i in range(n):
        w = float(boxes[i, 2]) - float(boxes[i, 0])
        h = float(boxes[i, 3]) - float(boxes[i, 1])
        lev = size_level(max(w, h), sizes)
        key[i] = lev
        population[lev] += 1
        wmax[lev], hmax[lev] = max(wmax[lev], w), max(hmax[lev], h)
    ex, ey = mx - ox, my - oy
    inv = np.ones(nlev)
    nx = np.ones(nlev, np.int64)
    ny = np.ones(nlev, np.int64)
    offsets = np.zeros(nlev + 1, np.int64)
    for lev in range(nlev):
        npop = max(population[lev], 1)
        size = max(sizes[lev] * 0.5, math.sqrt(ex * ey / npop), max(ex, ey) / npop)
        if population[lev] > 0 and size > 0.0:
            inv[lev] = 1.0 / size
            nx[lev] = int(ex / size) + 1
            ny[lev] = int(ey / size) + 1
        offsets[lev + 1] = offsets[lev] + nx[lev] * ny[lev]
    starts = np.zeros(offsets[nlev] + 1, np.int64)
    for i in range(n):
        lev = key[i]
        cx = (float(boxes[i, 0]) + float(boxes[i, 2])) * 0.5
        cy = (float(boxes[i, 1]) + float(boxes[i, 3])) * 0.5
        k = offsets[lev] + grid_cell(cy, oy, inv[lev], ny[lev]) * nx[lev] + grid_cell(cx, ox, inv[lev], nx[lev])
        key[i] = k
        starts[k + 1] += 1
    for c in range(offsets[nlev]):
        starts[c + 1] += starts[c]
    fill = starts[:-1].copy()
    items = np.empty(n, np.int64)
    for i in range(n):
        items[fill[key[i]]] = i
        fill[key[i]] += 1
    return items, starts, ox, oy, inv, nx, ny, offsets, wmax, hmax


@nb.njit(cache=True, inline="always")
def _window(index, lev, x1, y1, x2, y2):
    """Cells (cx0, cx1, cy0, cy1) of level lev that hold every box intersecting (x1, y1, x2, y2).

    An intersecting box has its centre within half its width (height) of the query box.
    """
    items, starts, ox, oy, inv, nx, ny, offsets, wmax, hmax = index
    fx1, fy1, fx2, fy2 = float(x1), float(y1), float(x2), float(y2)
    rx = wmax[lev] * 0.5 * (1.0 + _WINDOW_SLACK) + _WINDOW_SLACK * (abs(fx1) + abs(fx2))
    ry = hmax[lev] * 0.5 * (1.0 + _WINDOW_SLACK) + _WINDOW_SLACK * (abs(fy1) + abs(fy2))
    return (grid_cell(fx1 - rx, ox, inv[lev], nx[lev]), grid_cell(fx2 + rx, ox, inv[lev], nx[lev]),
            grid_cell(fy1 - ry, oy, inv[lev], ny[lev]), grid_cell(fy2 + ry, oy, inv[lev], ny[lev]))


@nb.njit(cache=True)
def _visit(index, boxes, x1, y1, x2, y2, found):
    """Indices of the indexed boxes that intersect (x1, y1, x2, y2) with positive area.

    Writes them to found[:k] and returns k. The query box is in the boxes' dtype.
    """
    items, starts, ox, oy, inv, nx, ny, offsets, wmax, hmax = index
    k = 0
    for lev in range(inv.shape[0]):
        if wmax[lev] <= 0.0:
            continue
        cx0, cx1, cy0, cy1 = _window(index, lev, x1, y1, x2, y2)
        for cy in range(cy0, cy1 + 1):
            row = offsets[lev] + cy * nx[lev]
            for e in range(starts[row + cx0], starts[row + cx1 + 1]):   # a row of cells is one run
                a = items[e]
                if min(x2, boxes[a, 2]) - max(x1, boxes[a, 0]) > 0 and min(y2, boxes[a, 3]) - max(y1, boxes[a, 1]) > 0:
                    found[k] = a
                    k += 1
    return k


# --------------------------------------------------------------------------- matching kernels
@nb.njit(cache=True, error_model="numpy")
def _match_indexed(anchors, a_areas, index, gts, g_areas, low_quality):
    """Grid path (every area positive and finite).

    Returns (best_iou (A,), best_gt (A,), gt_best (M,), low-quality flag (A,)).
    """
    n, m = anchors.shape[0], gts.shape[0]
    zero = np.zeros(1, a_areas.dtype)[0]
    best_iou = np.zeros(n, a_areas.dtype)     # an anchor that meets no gt has IoU 0 with gt 0
    best_gt = np.zeros(n, np.int64)
    gt_best = np.zeros(m, a_areas.dtype)
    flagged = np.zeros(n, np.bool_)
    found = np.empty(n, np.int64)
    values = np.empty(n, a_areas.dtype)
    items, starts, ox, oy, inv, nx, ny, offsets, wmax, hmax = index
    for g in range(m):
        gx1, gy1, gx2, gy2, ga = gts[g, 0], gts[g, 1], gts[g, 2], gts[g, 3], g_areas[g]
        k = 0
        top = zero
        for lev in range(inv.shape[0]):   # _visit, with the IoU computed on the way
            if wmax[lev] <= 0.0:
                continue
            cx0, cx1, cy0, cy1 = _window(index, lev, gx1, gy1, gx2, gy2)
            for cy in range(cy0, cy1 + 1):
                row = offsets[lev] + cy * nx[lev]
                for e in range(starts[row + cx0], starts[row + cx1 + 1]):
                    a = items[e]
                    w = min(gx2, anchors[a, 2]) - max(gx1, anchors[a, 0])
                    h = min(gy2, anchors[a, 3]) - max(gy1, anchors[a, 1])
                    if w > 0 and h > 0:
                        inter = w * h
                        found[k], values[k] = a, inter / (ga + a_areas[a] - inter)
                        top = max(top, values[k])
                        k += 1
        gt_best[g] = top
        for j in range(k):
            a = found[j]
            v = values[j]
            if v > best_iou[a]:
                best_iou[a] = v
                best_gt[a] = g
            if low_quality and v == top and top > 0:
                flagged[a] = True
    return best_iou, best_gt, gt_best, flagged


@nb.njit(cache=True, error_model="numpy")
def _match_dense(anchors, a_areas, gts, g_areas, low_quality):
    """Every pair, torch.max semantics (first maximum; NaN counts as the maximum)."""
    n, m = anchors.shape[0], gts.shape[0]
    zero = np.zeros(1, a_areas.dtype)[0]
    best_iou = np.zeros(n, a_areas.dtype)
    best_gt = np.zeros(n, np.int64)
    gt_best = np.full(m, -np.inf, a_areas.dtype)
    for a in range(n):
        ax1, ay1, ax2, ay2, aa = anchors[a, 0], anchors[a, 1], anchors[a, 2], anchors[a, 3], a_areas[a]
        for g in range(m):
            v = _pair_iou(ax1, ay1, ax2, ay2, aa, gts[g, 0], gts[g, 1], gts[g, 2], gts[g, 3], g_areas[g], zero)
            if g == 0 or v > best_iou[a] or (np.isnan(v) and not np.isnan(best_iou[a])):
                best_iou[a] = v
                best_gt[a] = g
            if v > gt_best[g] or (np.isnan(v) and not np.isnan(gt_best[g])):
                gt_best[g] = v
    flagged = np.zeros(n, np.bool_)
    if low_quality:
        for a in range(n):
            ax1, ay1, ax2, ay2, aa = anchors[a, 0], anchors[a, 1], anchors[a, 2], anchors[a, 3], a_areas[a]
            for g in range(m):
                # IoU(g, a) <= best_iou[a] unless NaN is involved; a NaN best never equals
                if np.isnan(gt_best[g]) or (gt_best[g] > best_iou[a] and not np.isnan(best_iou[a])):
                    continue
                if _pair_iou(ax1, ay1, ax2, ay2, aa, gts[g, 0], gts[g, 1], gts[g, 2], gts[g, 3],
                             g_areas[g], zero) == gt_best[g]:
                    flagged[a] = True
                    break
    return best_iou, best_gt, gt_best, flagged


@nb.njit(cache=True, error_model="numpy")
def _iof_indexed(boxes, areas, index, regions):
    """Largest intersection over box area with any region (grid path, every area positive)."""
    out = np.zeros(boxes.shape[0], areas.dtype)
    found = np.empty(boxes.shape[0], np.int64)
    for r in range(regions.shape[0]):
        rx1, ry1, rx2, ry2 = regions[r, 0], regions[r, 1], regions[r, 2], regions[r, 3]
        if not (rx2 > rx1 and ry2 > ry1):
            continue
        k = _visit(index, boxes, rx1, ry1, rx2, ry2, found)
        for j in range(k):
            a = found[j]
            w = min(rx2, boxes[a, 2]) - max(rx1, boxes[a, 0])
            h = min(ry2, boxes[a, 3]) - max(ry1, boxes[a, 1])
            out[a] = max(out[a], (w * h) / areas[a])
    return out


@nb.njit(cache=True, error_model="numpy")
def _iof_dense(boxes, areas, regions):
    """box_iof(boxes, regions).max(1) with every pair (boxes without area give 0)."""
    n = boxes.shape[0]
    out = np.zeros(n, areas.dtype)
    for a in range(n):
        if not areas[a] > 0:
            continue
        for r in range(regions.shape[0]):
            w = min(boxes[a, 2], regions[r, 2]) - max(boxes[a, 0], regions[r, 0])
            h = min(boxes[a, 3], regions[r, 3]) - max(boxes[a, 1], regions[r, 1])
            if w > 0 and h > 0:
                out[a] = max(out[a], (w * h) / areas[a])
    return out


@nb.njit(cache=True, error_model="numpy")
def match_kernel(anchors, gts, regions, high, low, low_quality, iof_thr):
    """Fused max-IoU assignment. anchors: (A, 4), A >= 1; gts: (M, 4); regions: (K, 4) ignore
    boxes; all one float dtype. high / low / iof_thr: scalars of that dtype (iof_thr NaN: no
    ignore regions).

    Returns (best_gt (A,) int64, best_iou (A,), gt_best (M,), labels (A,) int8 in {-1, 0, 1}).
    Labels: best_iou < low -> 0, < high -> -1, else 1; flagged low-quality matches -> 1; then a
    negative anchor whose intersection-over-own-area with a region exceeds iof_thr -> -1.
    """
    n, m = anchors.shape[0], gts.shape[0]
    a_areas = _areas(anchors)
    g_areas = _areas(gts)
    use_index = _all_proper(a_areas) and _all_proper(g_areas)
    use_regions = not np.isnan(iof_thr) and regions.shape[0] > 0
    if use_index:
        index = _index_boxes(anchors)
        best_iou, best_gt, gt_best, flagged = _match_indexed(anchors, a_areas, index, gts, g_areas, low_quality)
        iof = _iof_indexed(anchors, a_areas, index, regions) if use_regions else np.zeros(0, a_areas.dtype)
    else:
        best_iou, best_gt, gt_best, flagged = _match_dense(anchors, a_areas, gts, g_areas, low_quality)
        iof = _iof_dense(anchors, a_areas, regions) if use_regions else np.zeros(0, a_areas.dtype)
    every = False   # a gt with best IoU 0 ties with every anchor that misses it
    if low_quality and use_index:
        for g in range(m):
            every = every or gt_best[g] == 0
    labels = np.empty(n, np.int8)
    for a in range(n):
        v = best_iou[a]
        lab = 1
        if m == 0 or v < low:
            lab = 0
        elif v < high:
            lab = -1
        if lab != 1 and (flagged[a] or every):
            lab = 1
        if lab == 0 and use_regions and iof[a] > iof_thr:
            lab = -1
        labels[a] = lab
    return best_gt, best_iou, gt_best, labels


@nb.njit(cache=True)
def max_iof_kernel(boxes, regions):
    """Each box's largest intersection over its own area with any region (0 without area).

    boxes: (N, 4), regions: (K, 4), one dtype -> (N,). Same float operations as
    detkit.ops.boxes.box_iof(boxes, regions).max(1).
    """
    areas = _areas(boxes)
    if boxes.shape[0] == 0 or regions.shape[0] == 0:
        return np.zeros(boxes.shape[0], areas.dtype)
    if not _all_proper(areas):
        return _iof_dense(boxes, areas, regions)
    return _iof_indexed(boxes, areas, _index_boxes(boxes), regions)


# --------------------------------------------------------------------------- torch wrappers
def _check_boxes(boxes: Tensor, name: str) -> None:
    """A floating Tensor[N, 4], or TypeError / ValueError naming ``name`` (no value is read)."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch Tensor, got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {boxes.dtype}")


def _as_array(boxes: Tensor, name: str, like: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) float tensor -> contiguous float32/float64 array (float16 -> float32, or like's dtype)."""
    _check_boxes(boxes, name)
    t = boxes.detach()
    if like is not None:
        t = t.to(torch.float32 if like.dtype == np.float32 else torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    arr = t.cpu().contiguous().numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _match(anchors: Tensor, gt_boxes: Tensor, high: float, low: float, low_quality: bool,
           ignore_boxes: Tensor | None = None, ignore_iof_thresh: float | None = None):
    a = _as_array(anchors, "anchors")
    g = _as_array(gt_boxes, "gt_boxes", like=a)
    if ignore_boxes is None:
        ignore_boxes = torch.zeros((0, 4))
    r = _as_array(ignore_boxes, "ignore_boxes", like=a)
    scalar = a.dtype.type
    iof_thr = scalar(np.nan if ignore_iof_thresh is None else ignore_iof_thresh)
    return match_kernel(a, g, r, scalar(high), scalar(low), bool(low_quality), iof_thr)


def max_iou_stats(anchors: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each anchor's best ground truth and IoU, and each ground truth's best IoU, in one pass.

    Args:
        anchors: Tensor[N, 4]; gt_boxes: Tensor[M, 4] (N, M >= 1), float; CPU (Numba) or CUDA (torch).
    Returns:
        (best_gt Tensor[N] int64, best_iou Tensor[N], gt_best_iou Tensor[M]), equal to
        ``iou = box_iou(gt_boxes, anchors); iou.max(0)`` and ``iou.max(1).values``.
    """
    if anchors.shape[0] == 0 or gt_boxes.shape[0] == 0:
        raise ValueError(f"max_iou_stats needs N, M >= 1, got anchors {tuple(anchors.shape)} and "
                         f"gt_boxes {tuple(gt_boxes.shape)}")
    if anchors.device.type != "cpu":
        _check_boxes(anchors, "anchors")
        _check_boxes(gt_boxes, "gt_boxes")
        return max_iou_stats_torch(anchors, gt_boxes)
    best_gt, best_iou, gt_best, _ = _match(anchors, gt_boxes, 1.0, 0.0, False)
    device = anchors.device
    return (torch.from_numpy(best_gt).to(device), torch.from_numpy(best_iou).to(device),
            torch.from_numpy(gt_best).to(device))


def match_max_iou(anchors: Tensor, gt_boxes: Tensor, fg_iou_thresh: float, bg_iou_thresh: float,
                  allow_low_quality_matches: bool, *, ignore_boxes: Tensor | None = None,
                  ignore_iof_thresh: float | None = None) -> tuple[Tensor, Tensor]:
    """Max-IoU assignment of anchors to ground truth with torchvision's Matcher semantics.

    Args:
        anchors: Tensor[N, 4]; gt_boxes: Tensor[M, 4] (xyxy, float; CPU tensors go to the Numba kernel,
            CUDA tensors to detkit.ops.matching_torch, with no host round trip and no N x M matrix).
        fg_iou_thresh: IoU >= this -> positive. bg_iou_thresh: IoU < this -> negative
            (must not exceed fg_iou_thresh). allow_low_quality_matches: torchvision's rule.
        ignore_boxes: Tensor[K, 4] regions (crowd, difficult) and ignore_iof_thresh: an anchor
            that would be negative becomes ignored (-1) when its intersection over its own area
            with a region exceeds the threshold; positives stay positive. Both or neither.
    Returns:
        matched_idxs Tensor[N] int64: each anchor's best ground truth in [0, M) (0 when M == 0);
        labels Tensor[N] int8: 1 positive, 0 negative, -1 ignored (between the thresholds or in
        an ignore region). With M == 0 every anchor is negative unless ignored.
    """
    if not bg_iou_thresh <= fg_iou_thresh:
        raise ValueError(f"bg_iou_thresh ({bg_iou_thresh}) must not exceed fg_iou_thresh ({fg_iou_thresh})")
    if (ignore_boxes is None) != (ignore_iof_thresh is None) and ignore_boxes is not None:
        raise ValueError("ignore_boxes needs ignore_iof_thresh (the intersection-over-anchor threshold)")
    device = anchors.device
    if device.type != "cpu":
        for boxes, name in ((anchors, "anchors"), (gt_boxes, "gt_boxes"), (ignore_boxes, "ignore_boxes")):
            if boxes is not None:
                _check_boxes(boxes, name)
        return match_max_iou_torch(anchors, gt_boxes, fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches,
                                   ignore_boxes=ignore_boxes, ignore_iof_thresh=ignore_iof_thresh)
    if anchors.dim() == 2 and anchors.shape[0] == 0:
        _as_array(gt_boxes, "gt_boxes")
        return torch.zeros(0, dtype=torch.int64, device=device), torch.zeros(0, dtype=torch.int8, device=device)
    best_gt, _, _, labels = _match(anchors, gt_boxes, fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches,
                                   ignore_boxes, ignore_iof_thresh)
    return torch.from_numpy(best_gt).to(device), torch.from_numpy(labels).to(device)


def max_iof(boxes: Tensor, regions: Tensor) -> Tensor:
    """Each box's largest intersection-over-own-area with any region, without the N x K matrix.

    Args:
        boxes: Tensor[N, 4]; regions: Tensor[K, 4] (K may be 0).
    Returns:
        Tensor[N] in [0, 1]: equal to ``box_iof(boxes, regions).max(1).values`` (0 when K == 0 or
        the box has no area).
    """
    if boxes.device.type != "cpu":
        _check_boxes(boxes, "boxes")
        _check_boxes(regions, "regions")
        return max_iof_torch(boxes, regions)
    b = _as_array(boxes, "boxes")
    r = _as_array(regions, "regions", like=b)
    return torch.from_numpy(max_iof_kernel(b, r)).to(boxes.device)
