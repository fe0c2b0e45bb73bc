"""Numba kernels of anchor fitting: the best IoU of every box against a set of anchor shapes (the
hill-climb fitness) and the per-box part of the learned objective with its gradient, in one pass.

Shape shorthand: N boxes, L levels, A anchor shapes per level.

They take and return NumPy arrays and are compiled with ``cache=True``. Their NumPy / torch
references are :func:`detkit.anchors.fit.anchor_fitness`'s array formula and
:func:`detkit.anchors.metrics.offset_iou` (the tests hold the kernels to them). Both loop over
boxes once, never building the (N, L, A) intermediates the array versions allocate per step.

:func:`best_ious` repeats the array formula operation by operation in float32 (no fast-math, no
fused multiply-add), so its results are bitwise those of the NumPy version. :func:`box_objective`
accumulates in float64 in a fixed order (blocks of boxes, then the blocks in turn), so it is
deterministic and equal to the torch autograd version up to float32 rounding.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["best_ious", "box_objective"]

_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)


@numba.njit(cache=True)
def best_ious(gw: np.ndarray, gh: np.ndarray, dx: np.ndarray, dy: np.ndarray, shapes: np.ndarray,
              use_offsets: bool) -> tuple:
    """Best centred IoU_c and best grid IoU of every box over all L*A shapes, in float32.

    Args:
        gw, gh: float32 (N,) box widths and heights, all > 0. dx, dy: float32 (L, N) |dx|, |dy| from
            each box centre to the nearest anchor centre of each level (ignored, any shape, when
            not `use_offsets`). shapes: float32 (L, A, 2), all sides > 0.
    Returns:
        (centred float32 (N,), grid float32 (N,)); grid equals centred when not `use_offsets`.
    """
    n, num_levels, num_anchors = gw.shape[0], shapes.shape[0], shapes.shape[1]
    centred = np.full(n, -1.0, dtype=np.float32)  # every IoU is >= 0
    grid = np.full(n, -1.0, dtype=np.float32)
    for lv in range(num_levels):
        for a in range(num_anchors):
            aw, ah = shapes[lv, a, 0], shapes[lv, a, 1]
            a_area = aw * ah
            if not use_offsets:
                for i in range(n):  # one shape against all boxes: loops LLVM vectorises
                    ow, oh = min(gw[i], aw), min(gh[i], ah)
                    inter = ow * oh
                    centred[i] = max(centred[i], inter / (gw[i] * gh[i] + a_area - inter))
                continue
            for i in range(n):
                ow, oh = min(gw[i], aw), min(gh[i], ah)
                total = gw[i] * gh[i] + a_area
                inter = ow * oh
                centred[i] = max(centred[i], inter / (total - inter))
                ow = min(ow, max((gw[i] + aw) * _HALF - dx[lv, i], _ZERO))
                oh = min(oh, max((gh[i] + ah) * _HALF - dy[lv, i], _ZERO))
                inter = ow * oh
                grid[i] = max(grid[i], inter / (total - inter))
    if not use_offsets:
        grid[:] = centred
    return centred, grid


@numba.njit(cache=True)
def _min_grads(x, y):
    """d min(x, y) / dx and / dy with torch.minimum's rule: a tie splits the gradient in halves."""
    if x < y:
        return 1.0, 0.0
    if x > y:
        return 0.0, 1.0
    return 0.5, 0.5


@numba.njit(cache=True)
def _side(g, a, d, use_offsets):
    """Overlap along one axis, ``min(g, a, max((g + a) / 2 - d, 0))``, and its derivative in `a`."""
    o = min(g, a)
    dg, da = _min_grads(g, a)
    do = da
    if use_offsets:
        c = (g + a) * _HALF - d
        dc = 0.5 if c >= _ZERO else 0.0  # torch's clamp(min=0) passes the gradient where c >= 0
        c = max(c, _ZERO)
        left, right = _min_grads(o, c)
        o = min(o, c)
        do = left * do + right * dc
    return o, do


@numba.njit(cache=True)
def _box_block(wh, offsets, s32, use_offsets, start, stop, inv_temp, threshold, sharpness, recall_weight,
               iou, grad):
    """Objective sum and its gradient (into `grad`, float64 (L, A, 2)) over boxes [start, stop)."""
    num_levels, num_anchors = s32.shape[0], s32.shape[1]
    k_all = num_levels * num_anchors
    d_w = np.empty(k_all)
    d_h = np.empty(k_all)
    d_iou_area = np.empty(k_all)
    weight = np.empty(k_all)
    total = 0.0
    for i in range(start, stop):
        gw, gh = wh[i, 0], wh[i, 1]
        g_area = gw * gh
        for lv in range(num_levels):
            dx = offsets[i, lv, 0] if use_offsets else _ZERO
            dy = offsets[i, lv, 1] if use_offsets else _ZERO
            for a in range(num_anchors):
                k = lv * num_anchors + a
                aw, ah = s32[lv, a, 0], s32[lv, a, 1]
                ow, dow = _side(gw, aw, dx, use_offsets)
                oh, doh = _side(gh, ah, dy, use_offsets)
                inter = ow * oh
                union = g_area + aw * ah - inter
                iou[k] = inter / union
                # d iou = (G + A_a) / U^2 d inter - inter / U^2 d A_a (float64 from here on)
                u2 = float(union) * float(union)
                d_inter = (float(g_area) + float(aw) * float(ah)) / u2
                d_iou_area[k] = -float(inter) / u2
                d_w[k] = d_inter * float(oh) * dow
                d_h[k] = d_inter * float(ow) * doh
        top = iou[0]
        for k in range(1, k_all):
            top = max(top, iou[k])
        norm = 0.0
        for k in range(k_all):
            e = math.exp((float(iou[k]) - float(top)) * inv_temp)
            weight[k] = e
            norm += e
        smooth = 0.0
        for k in range(k_all):
            weight[k] /= norm
            smooth += weight[k] * float(iou[k])
        recall = 1.0 / (1.0 + math.exp(-(smooth - threshold) / sharpness))
        total += smooth + recall_weight * recall
        coef = 1.0 + recall_weight * recall * (1.0 - recall) / sharpness
        for lv in range(num_levels):
            for a in range(num_anchors):
                k = lv * num_anchors + a
                c = coef * weight[k]
                grad[lv, a, 0] += c * (d_w[k] + d_iou_area[k] * float(s32[lv, a, 1]))
                grad[lv, a, 1] += c * (d_h[k] + d_iou_area[k] * float(s32[lv, a, 0]))
    return total


@numba.njit(cache=True)
def box_objective(wh: np.ndarray, offsets: np.ndarray, shapes: np.ndarray, use_offsets: bool, temperature: float,
                  threshold: float, sharpness: float, recall_weight: float, block: int) -> tuple:
    """Per-box part of the learned objective and its gradient in the shapes.

    ``mean_n(s_n + recall_weight * sigmoid((s_n - threshold) / sharpness))`` with the smooth best IoU
    ``s_n = sum_k w_nk IoU_nk``, w_n the softmax of IoU_n / temperature over all L*A shapes, held
    constant (no gradient through it), IoU the grid-aware offset IoU (centred without offsets)
    computed in float32 from the shapes rounded to float32, as the torch version does.

    Args:
        wh: float32 (N, 2), N > 0. offsets: float32 (N, L, 2) (ignored when not `use_offsets`).
        shapes: float64 (L, A, 2). block: boxes per partial sum (fixes the summation order).
    Returns:
        (objective float, gradient float64 (L, A, 2) of the objective in `shapes`).
    """
    n = wh.shape[0]
    s32 = shapes.astype(np.float32)
    num_levels, num_anchors = shapes.shape[0], shapes.shape[1]
    iou = np.empty(num_levels * num_anchors, dtype=np.float32)
    grad = np.zeros((num_levels, num_anchors, 2))
    part = np.zeros((num_levels, num_anchors, 2))
    total = 0.0
    for start in range(0, n, block):
        part[:] = 0.0
        total += _box_block(wh, offsets, s32, use_offsets, start, min(start + block, n), 1.0 / temperature,
                            threshold, sharpness, recall_weight, iou, part)
        grad += part
    return total / n, grad / n
