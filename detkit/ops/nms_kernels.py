"""Greedy NMS kernels in Numba: NumPy arrays in, kept indices out (the torch API is in nms.py).

Shape shorthand: N boxes, K kept boxes.

Every kernel takes ``boxes`` (N, 4) float32/float64 (x1, y1, x2, y2), a visiting ``order`` (N,)
int64 (the caller sorts by score) and a threshold, and reproduces torchvision's CPU kernel: box j
is dropped when an already kept box i has ``IoU(i, j) > thr``, with the IoU computed in the boxes'
dtype exactly as torchvision's C++ kernel does (``areas = (x2 - x1) * (y2 - y1)``,
``w = max(0, min(x2) - max(x1))``, ``inter = w * h``, ``iou = inter / (area_i + area_j - inter)``)
and compared with the threshold in float64.

Tie-break (detkit.ops.score_order's rule, shared by the eager detector, its exported graph and
torchvision's CPU ``nms``): the wrappers pass ``order`` = the stable descending sort of the scores,
so boxes with equal scores are visited by increasing index, and every kernel returns the kept
indices in visiting order. Which of two overlapping boxes with equal scores survives therefore
depends only on their indices, never on a sort's whim.

Greedy NMS is evaluated as "keep a box unless a kept box suppresses it", which gives the same set
and order as torchvision's "each kept box suppresses the later ones". Kept boxes are indexed by
their centres in a multi-level uniform grid (level l holds boxes whose longer side is within a
factor 2 of ``s_l = s_max / 2**(L - 1 - l)``; its cells are a fraction of s_l, and the kept boxes
of a cell sit next to each other in memory). IoU > t needs an overlap larger than
t * max(w_i, w_j) on the x axis (and likewise on y), which bounds the centre distance and the
width and height ratios, so a candidate only visits the few cells and levels that can hold a
suppressing box. For thr >= 0 boxes without a positive intersection never suppress each other
(their IoU is 0, -0 or NaN), which makes the pruning exact; a negative or NaN threshold uses
torchvision's plain quadratic loop.

Public kernels: :func:`nms_kernel` (grid or small-input loop), :func:`nms_plain_kernel` (the
reference quadratic loop) and :func:`batched_nms_kernel` (independent NMS per class). They do
not check their arguments: the wrappers in :mod:`detkit.ops.nms` check shapes, dtypes and
finiteness and sort the scores before calling them.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from detkit.ops.grid_cells import grid_cell, size_level

__all__ = ["nms_kernel", "nms_plain_kernel", "batched_nms_kernel"]

# The pruning bounds (centre distance, width / height ratio) are derived for a threshold lowered
# by this relative margin, far above the few-ulp rounding of the IoU formula, so pruning never
# changes a result (it only saves work).
_PRUNE_SLACK = 1e-3
# Inputs up to this many boxes skip the grid and test every kept box (speed only).
_SMALL_SEGMENT = 48


@nb.njit(cache=True)
def _box_areas(boxes):
    """(x2 - x1) * (y2 - y1) in the boxes' dtype. boxes: (N, 4) -> (N,)."""
    n = boxes.shape[0]
    areas = np.empty(n, dtype=boxes.dtype)
    for i in range(n):
        areas[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
    return areas


@nb.njit(cache=True, error_model="numpy", inline="always")
def _iou_exceeds(ax1, ay1, ax2, ay2, a_area, bx1, by1, bx2, by2, b_area, thr):
    """torchvision's IoU test for a kept box a and a candidate b; only valid for thr >= 0."""
    w = min(ax2, bx2) - max(ax1, bx1)
    if not w > 0:
        return False
    h = min(ay2, by2) - max(ay1, by1)
    if not h > 0:
        return False
    inter = w * h
    return inter / (a_area + b_area - inter) > thr


@nb.njit(cache=True, error_model="numpy")
def _nms_plain_range(boxes, areas, order, start, stop, thr, keep, nk):
    """torchvision's quadratic loop over order[start:stop]; kept indices go to keep[nk:]. Any thr."""
    zero = np.zeros(1, areas.dtype)[0]
    suppressed = np.zeros(stop - start, dtype=np.bool_)
    for ti in range(start, stop):
        if suppressed[ti - start]:
            continue
        i = order[ti]
        keep[nk] = i
        nk += 1
        ix1, iy1, ix2, iy2, iarea = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], areas[i]
        for tj in range(ti + 1, stop):
            if suppressed[tj - start]:
                continue
            j = order[tj]
            w = min(ix2, boxes[j, 2]) - max(ix1, boxes[j, 0])
            h = min(iy2, boxes[j, 3]) - max(iy1, boxes[j, 1])
            w = w if w > 0 else zero
            h = h if h > 0 else zero
            inter = w * h
            if inter / (iarea + areas[j] - inter) > thr:
                suppressed[tj - start] = True
    return nk


@nb.njit(cache=True, error_model="numpy")
def _nms_small_range(boxes, areas, order, start, stop, thr, keep, nk):
    """Check-against-kept loop without an index, for few boxes; thr >= 0."""
    first = nk
    for t in range(start, stop):
        i = order[t]
        bx1, by1, bx2, by2, ba = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], areas[i]
        suppressed = False
        for s in range(first, nk):
            k = keep[s]
            if _iou_exceeds(boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3], areas[k],
                            bx1, by1, bx2, by2, ba, thr):
                suppressed = True
                break
        if not suppressed:
            keep[nk] = i
            nk += 1
    return nk


@nb.njit(cache=True, inline="always")
def _centre_reach(wj, wmax, t):
    """Largest centre distance (one axis) at which a box of width <= wmax can still overlap a box
    of width wj by more than t * max(widths), which IoU > t requires."""
    wk = wmax if t <= 0.0 else min(wmax, wj / t)
    near = min(wj, wk)
    return max((near + wj) * 0.5 - t * max(near, wj), (wk + wj) * 0.5 - t * max(wk, wj))


@nb.njit(cache=True, inline="always")
def _centre(boxes, shift, i):
    """Centre of box i in float64, moved by shift[i] when shift has rows."""
    cx = (float(boxes[i, 0]) + float(boxes[i, 2])) * 0.5
    cy = (float(boxes[i, 1]) + float(boxes[i, 3])) * 0.5
    if shift.shape[0] > 0:
        cx, cy = cx + shift[i, 0], cy + shift[i, 1]
    return cx, cy


@nb.njit(cache=True)
def _grid_setup(boxes, thr, shift):
    """Levels and cells for the proper boxes (x2 > x1, y2 > y1), before any is kept.

    Level l holds boxes whose longer side is in (sizes[l] / 2, sizes[l]]; it is a grid of square
    cells (a fraction of sizes[l], at most about 2 cells per box of the level) over the box
    centres. Every proper box gets its level and cell now, so that kept boxes can be stored cell
    by cell in a flat array (cell c owns slots starts[c]:starts[c + 1]) and level by level.
    Returns (ox, oy, sizes (L,), inv_cell (L,), nx (L,), ny (L,), offsets (L + 1,), level (N,)
    (-1: not proper), key (N,) cell of each box, starts (cells + 1,), level_starts (L + 1,)).
    """
    n = boxes.shape[0]
    nprop = 0
    ox, oy, mx, my = np.inf, np.inf, -np.inf, -np.inf
    smin, smax = np.inf, 0.0
    for i in range(n):
        w = float(boxes[i, 2]) - float(boxes[i, 0])
        h = float(boxes[i, 3]) - float(boxes[i, 1])
        if w > 0 and h > 0:
            nprop += 1
            cx, cy = _centre(boxes, shift, i)
            ox, oy, mx, my = min(ox, cx), min(oy, cy), max(mx, cx), max(my, cy)
            smin, smax = min(smin, max(w, h)), max(smax, max(w, h))
    if nprop == 0:
        smin, smax, ox, oy, mx, my = 1.0, 1.0, 0.0, 0.0, 0.0, 0.0
    nlev = 1   # the top level ends at the largest box; at most 21 levels
    while nlev < 21 and smax * 2.0 ** (1 - nlev) > smin:
        nlev += 1
    sizes = np.empty(nlev)
    for lev in range(nlev):
        sizes[lev] = smax * 2.0 ** (lev + 1 - nlev)
    level = np.full(n, -1, np.int64)
    level_starts = np.zeros(nlev + 1, np.int64)
    for i in range(n):
        w = float(boxes[i, 2]) - float(boxes[i, 0])
        h = float(boxes[i, 3]) - float(boxes[i, 1])
        if w > 0 and h > 0:
            level[i] = size_level(max(w, h), sizes)
            level_starts[level[i] + 1] += 1
    # cells a fraction of the box size, so that the query window (about (1 - thr) * size wide)
    # spans 2 to 3 cells; never more than about 2 cells per box of the level
    frac = min(max((1.0 - thr) * 0.5, 1.0 / 16.0), 0.5)
    ex, ey = mx - ox, my - oy
    inv = np.ones(nlev)
    nx = np.ones(nlev, np.int64)
    ny = np.ones(nlev, np.int64)
    offsets = np.zeros(nlev + 1, np.int64)
    for lev in range(nlev):
        npop = max(level_starts[lev + 1], 1)
        size = max(sizes[lev] * frac, math.sqrt(ex * ey / (2.0 * npop)), max(ex, ey) / (2.0 * npop))
        if level_starts[lev + 1] > 0 and size > 0.0:
            inv[lev] = 1.0 / size
            nx[lev] = int(ex / size) + 1
            ny[lev] = int(ey / size) + 1
        offsets[lev + 1] = offsets[lev] + nx[lev] * ny[lev]
    for lev in range(nlev):
        level_starts[lev + 1] += level_starts[lev]
    key = np.full(n, -1, np.int64)
    starts = np.zeros(offsets[nlev] + 1, np.int64)
    for i in range(n):
        lev = level[i]
        if lev >= 0:
            cx, cy = _centre(boxes, shift, i)
            key[i] = (offsets[lev] + grid_cell(cy, oy, inv[lev], ny[lev]) * nx[lev]
                      + grid_cell(cx, ox, inv[lev], nx[lev]))
            starts[key[i] + 1] += 1
    for c in range(offsets[nlev]):
        starts[c + 1] += starts[c]
    return ox, oy, sizes, inv, nx, ny, offsets, level, key, starts, level_starts


@nb.njit(cache=True, error_model="numpy")
def _nms_grid(boxes, areas, order, thr, keep, classes, shift):
    """Greedy NMS in the given visiting order with a multi-level grid of kept boxes; thr >= 0.

    Writes the kept indices to keep[:k] and returns k. With classes (N,) and shift (N, 2) given
    (else both empty), only boxes of one class suppress each other, and shift moves each class to
    its own tile of the grid so that classes rarely share cells. A kept box that suppresses box i
    overlaps it by more than thr * the larger extent on each axis, which bounds their width and
    height ratios and the distance of their centres; the bounds use a threshold lowered by
    _PRUNE_SLACK, so float rounding never hides a suppressing box. (One function on purpose:
    passing the arrays to a helper per candidate and level costs reference counting.)
    """
    ox, oy, sizes, inv, nx, ny, offsets, level, key, starts, level_starts = _grid_setup(boxes, thr, shift)
    nlev = sizes.shape[0]
    t_eff, grow = thr * (1.0 - _PRUNE_SLACK), 1.0 + _PRUNE_SLACK
    nslot = max(starts[-1], 1)
    kb = np.empty((nslot, 4), boxes.dtype)            # kept boxes, cell by cell, in keep order
    ka = np.empty(nslot, boxes.dtype)
    kc = np.empty(nslot, np.int64)                    # class of each kept box
    filled = np.zeros(offsets[nlev], np.int64)        # kept boxes per cell
    by_level = np.empty(nslot, np.int64)              # slots of each level, in keep order
    count = np.zeros(nlev, np.int64)
    wmin, wmax = np.full(nlev, np.inf), np.full(nlev, -np.inf)
    hmin, hmax = np.full(nlev, np.inf), np.full(nlev, -np.inf)
    shifted = shift.shape[0] > 0
    nk = 0
    for t in range(order.shape[0]):
        i = order[t]
        own = level[i]
        if own < 0:   # boxes without area are never suppressed
            keep[nk] = i
            nk += 1
            continue
        bx1, by1, bx2, by2, ba = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], areas[i]
        wj, hj = float(bx2) - float(bx1), float(by2) - float(by1)
        cxj, cyj = (float(bx1) + float(bx2)) * 0.5, (float(by1) + float(by2)) * 0.5
        cj = 0
        if shifted:
            cxj, cyj, cj = cxj + shift[i, 0], cyj + shift[i, 1], classes[i]
        suppressed = False
        for step in range(2 * nlev - 1):   # own level first, then outwards
            lev = own + (step + 1) // 2 if step % 2 == 1 else own - step // 2
            if lev < 0 or lev >= nlev or count[lev] == 0:
                continue
            if wmax[lev] * grow < t_eff * wj or wj * grow < t_eff * wmin[lev]:
                continue
            if hmax[lev] * grow < t_eff * hj or hj * grow < t_eff * hmin[lev]:
                continue
            rx = _centre_reach(wj, wmax[lev], t_eff) * grow + 1e-9 * (abs(cxj) + wj + wmax[lev])
            ry = _centre_reach(hj, hmax[lev], t_eff) * grow + 1e-9 * (abs(cyj) + hj + hmax[lev])
            if not (rx > 0.0 and ry > 0.0):
                continue
            cx0, cx1 = grid_cell(cxj - rx, ox, inv[lev], nx[lev]), grid_cell(cxj + rx, ox, inv[lev], nx[lev])
            cy0, cy1 = grid_cell(cyj - ry, oy, inv[lev], ny[lev]), grid_cell(cyj + ry, oy, inv[lev], ny[lev])
            if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) >= count[lev]:   # fewer boxes than cells: scan the level
                for q in range(level_starts[lev], level_starts[lev] + count[lev]):
                    s = by_level[q]
                    if kc[s] == cj and _iou_exceeds(kb[s, 0], kb[s, 1], kb[s, 2], kb[s, 3], ka[s],
                                                    bx1, by1, bx2, by2, ba, thr):
                        suppressed = True
                        break
            else:
                for cy in range(cy0, cy1 + 1):
                    row = offsets[lev] + cy * nx[lev]
                    for c in range(row + cx0, row + cx1 + 1):
                        for s in range(starts[c], starts[c] + filled[c]):
                            if kc[s] == cj and _iou_exceeds(kb[s, 0], kb[s, 1], kb[s, 2], kb[s, 3], ka[s],
                                                            bx1, by1, bx2, by2, ba, thr):
                                suppressed = True
                                break
                        if suppressed:
                            break
                    if suppressed:
                        break
            if suppressed:
                break
        if suppressed:
            continue
        keep[nk] = i
        nk += 1
        s = starts[key[i]] + filled[key[i]]
        filled[key[i]] += 1
        kb[s, 0], kb[s, 1], kb[s, 2], kb[s, 3], ka[s], kc[s] = bx1, by1, bx2, by2, ba, cj
        by_level[level_starts[own] + count[own]] = s
        count[own] += 1
        wmin[own], wmax[own] = min(wmin[own], wj), max(wmax[own], wj)
        hmin[own], hmax[own] = min(hmin[own], hj), max(hmax[own], hj)
    return nk


@nb.njit(cache=True)
def nms_kernel(boxes, order, thr):
    """Greedy NMS. boxes: (N, 4) float32/64; order: (N,) int64 visiting order (the stable
    descending sort of the scores: equal scores by increasing index).

    Returns the kept indices (K,) int64 in visiting order.
    """
    n = order.shape[0]
    areas = _box_areas(boxes)
    keep = np.empty(n, np.int64)
    if not thr >= 0.0:
        nk = _nms_plain_range(boxes, areas, order, 0, n, thr, keep, 0)
    elif n <= _SMALL_SEGMENT:
        nk = _nms_small_range(boxes, areas, order, 0, n, thr, keep, 0)
    else:
        nk = _nms_grid(boxes, areas, order, thr, keep, np.empty(0, np.int64), np.empty((0, 2)))
    return keep[:nk]


@nb.njit(cache=True)
def nms_plain_kernel(boxes, order, thr):
    """The reference quadratic loop of torchvision's CPU kernel (tests and negative thresholds); order as
    :func:`nms_kernel`'s, kept indices in visiting order."""
    areas = _box_areas(boxes)
    keep = np.empty(order.shape[0], np.int64)
    nk = 0
    if order.shape[0] > 0:
        nk = _nms_plain_range(boxes, areas, order, 0, order.shape[0], thr, keep, 0)
    return keep[:nk]


@nb.njit(cache=True)
def _group_by_class(order, classes):
    """Stable partition of ``order`` by ``classes[order]``. Returns (grouped order, segment bounds)."""
    n = order.shape[0]
    lo, hi = classes.min(), classes.max()
    if hi - lo <= 2 * n + 1024:   # counting sort
        counts = np.zeros(hi - lo + 2, np.int64)
        for t in range(n):
            counts[classes[order[t]] - lo + 1] += 1
        bounds = [0]
        for c in range(1, counts.shape[0]):
            if counts[c] > 0:
                bounds.append(counts[c] + bounds[-1])
            counts[c] += counts[c - 1]
        grouped = np.empty(n, np.int64)
        for t in range(n):
            c = classes[order[t]] - lo
            grouped[counts[c]] = order[t]
            counts[c] += 1
        return grouped, np.array(bounds, dtype=np.int64)
    cls_in_order = classes[order]
    perm = np.argsort(cls_in_order, kind="mergesort")
    grouped = order[perm]
    bounds = [0]
    for t in range(1, n):
        if cls_in_order[perm[t]] != cls_in_order[perm[t - 1]]:
            bounds.append(t)
    bounds.append(n)
    return grouped, np.array(bounds, dtype=np.int64)


@nb.njit(cache=True)
def _class_tiles(boxes, classes):
    """Per-box shift (N, 2) that puts each class in its own tile of a square arrangement."""
    n = boxes.shape[0]
    grouped, bounds = _group_by_class(np.arange(n), classes)
    ntile = bounds.shape[0] - 1
    cols = int(math.ceil(math.sqrt(ntile)))
    lo_x, lo_y, hi_x, hi_y, wmax, hmax = np.inf, np.inf, -np.inf, -np.inf, 0.0, 0.0
    for i in range(n):
        x1, y1, x2, y2 = float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])
        if x2 > x1 and y2 > y1:
            lo_x, hi_x = min(lo_x, (x1 + x2) * 0.5), max(hi_x, (x1 + x2) * 0.5)
            lo_y, hi_y = min(lo_y, (y1 + y2) * 0.5), max(hi_y, (y1 + y2) * 0.5)
            wmax, hmax = max(wmax, x2 - x1), max(hmax, y2 - y1)
    step_x = max(hi_x - lo_x, 0.0) + 4.0 * wmax + 1.0
    step_y = max(hi_y - lo_y, 0.0) + 4.0 * hmax + 1.0
    shift = np.zeros((n, 2))
    for tile in range(ntile):
        for t in range(bounds[tile], bounds[tile + 1]):
            shift[grouped[t], 0] = (tile % cols) * step_x
            shift[grouped[t], 1] = (tile // cols) * step_y
    return shift


@nb.njit(cache=True)
def batched_nms_kernel(boxes, order, classes, thr):
    """Independent greedy NMS per class. boxes: (N, 4); order: (N,) int64 visiting order (the
    stable descending sort of the scores); classes: (N,) int64.

    Returns the kept indices (K,) int64 in visiting order: by decreasing score, equal scores by
    increasing index, whatever their classes (the visiting order of every class is ``order``'s).
    """
    n = order.shape[0]
    areas = _box_areas(boxes)
    keep = np.empty(n, np.int64)
    if thr >= 0.0:   # one grid, classes in separate tiles, only same-class boxes compared
        nk = _nms_grid(boxes, areas, order, thr, keep, classes, _class_tiles(boxes, classes))
    else:
        grouped, bounds = _group_by_class(order, classes)
        nk = 0
        for g in range(bounds.shape[0] - 1):
            nk = _nms_plain_range(boxes, areas, grouped, bounds[g], bounds[g + 1], thr, keep, nk)
        mask = np.zeros(n, np.bool_)
        for s in range(nk):
            mask[keep[s]] = True
        nk = 0
        for t in range(n):
            if mask[order[t]]:
                keep[nk] = order[t]
                nk += 1
    return keep[:nk]
