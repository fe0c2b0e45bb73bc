"""Fitting anchor shapes to training boxes: level assignment, IoU k-means per level, hill climb.

Shape shorthand: N training boxes, L levels, A anchor shapes per level, K clusters.
Inputs are arrays of box shapes (w, h) in network-input pixels, taken after the training resize;
optionally each box's per-level offsets (N, L, 2) to its nearest anchor centre
(:func:`detkit.anchors.metrics.grid_offsets`), which make the fitness grid-aware.
Every function is pure and seeded; nothing here reads a data set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from detkit.anchors.kernels import best_ious

__all__ = [
    "MIN_FIT_SIDE", "assign_levels", "kmeans_shapes", "hill_climb", "fit_kmeans", "anchor_fitness",
    "best_ious_reference",
    "fit_score", "improves", "decide", "FitResult",
]

# Boxes with a side under this many pixels are left out of fitting (docs/anchors.md, the kmeans mode).
MIN_FIT_SIDE = 2.0


@dataclass
class FitResult:
    """The outcome of a sizing mode.

    Attributes:
        shapes: float64 (L, A, 2), the shapes to use (the starting set when the fit was not adopted).
        candidate: float64 (L, A, 2), what the fit produced, adopted or not.
        adopted: whether `candidate` improved on the starting set and was taken.
        reason: one line saying why (printed by the caller).
        before / after: :func:`fit_score` of the starting set and of the candidate.
        fitted_levels: per level, True when its shapes were fitted (False: kept, too few boxes).
    """

    shapes: np.ndarray
    candidate: np.ndarray
    adopted: bool
    reason: str
    before: Dict[str, float] = field(default_factory=dict)
    after: Dict[str, float] = field(default_factory=dict)
    fitted_levels: List[bool] = field(default_factory=list)


def assign_levels(box_wh: np.ndarray, strides: Sequence[int]) -> np.ndarray:
    """Level of each box: ``l = clamp(round(log2(sqrt(w*h) / (8 * s_0))), 0, L-1)``. box_wh (N, 2) -> int64 (N,)."""
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    size = np.sqrt(np.maximum(wh[:, 0] * wh[:, 1], np.finfo(np.float64).tiny))
    level = np.floor(np.log2(size / (8.0 * strides[0])) + 0.5)  # round half up
    return np.clip(level, 0, len(strides) - 1).astype(np.int64)


def _centred_iou_np(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU_c of (N, 2) shapes with (K, 2) shapes -> (N, K); same formula as ops.boxes.centred_iou."""
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
    return inter / (wh[:, 0:1] * wh[:, 1:2] + (centres[:, 0] * centres[:, 1])[None, :] - inter)


def _kmeanspp(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with distance 1 - IoU_c (probability proportional to distance squared)."""
    centres = [wh[rng.integers(len(wh))]]
    dist = 1.0 - _centred_iou_np(wh, np.array(centres))[:, 0]
    for _ in range(1, k):
        weight = np.maximum(dist, 0.0) ** 2
        total = weight.sum()
        if not total > 0:  # every shape left rounds to IoU_c 1 with a chosen centre: pick uniformly
            weight, total = np.ones(len(wh)), float(len(wh))
        pick = rng.choice(len(wh), p=weight / total)
        centres.append(wh[pick])
        dist = np.minimum(dist, 1.0 - _centred_iou_np(wh, wh[pick][None])[:, 0])
    return np.array(centres)


def _lloyd_median(wh: np.ndarray, centres: np.ndarray, iters: int) -> np.ndarray:
    """Assign each shape to its highest-IoU_c centre, move each centre to its members' median (w, h)."""
    assign = None
    for _ in range(iters):
        iou = _centred_iou_np(wh, centres)  # (N, K)
        new_assign = iou.argmax(axis=1)
        if assign is not None and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        best = iou.max(axis=1)
        for j in range(len(centres)):
            members = wh[assign == j]
            if len(members):
                centres[j] = np.median(members, axis=0)
            else:  # empty cluster: restart it on the worst-served shape
                worst = int(best.argmin())
                centres[j] = wh[worst]
                best[worst] = 1.0
    return centres


def kmeans_shapes(box_wh: np.ndarray, k: int, *, restarts: int = 10, iters: int = 300, seed: int = 0) -> np.ndarray:
    """IoU k-means of box shapes: distance 1 - IoU_c, k-means++ seeding, median update, restarts.

    Args:
        box_wh: (N, 2) shapes, all sides > 0.
        k: number of clusters.
    Returns:
        float64 (K', 2) centres sorted by aspect ratio h / w then area, K' = min(k, distinct shapes)
        (with no more distinct shapes than k the distinct shapes themselves are returned).
        The best restart by mean best IoU_c is kept; the same seed gives the same result.
    """
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(wh) == 0:
        return np.zeros((0, 2))
    distinct = np.unique(wh, axis=0)
    if len(distinct) <= k:
        centres = distinct
    else:
        rng = np.random.default_rng(seed)
        best_fit, centres = -1.0, None
        for _ in range(restarts):
            cand = _lloyd_median(wh, _kmeanspp(wh, k, rng), iters)
            fit = _centred_iou_np(wh, cand).max(axis=1).mean()
            if fit > best_fit:
                best_fit, centres = fit, cand
    order = np.lexsort((centres[:, 0] * centres[:, 1], centres[:, 1] / centres[:, 0]))
    return centres[order]


def _best_offset_iou_np(wh: np.ndarray, offsets: Optional[np.ndarray], shapes: np.ndarray) -> np.ndarray:
    """NumPy twin of detkit.anchors.metrics.offset_iou followed by the max over all anchors -> (N,)."""
    g = wh[:, None, None, :]  # (N, 2) -> (N, 1, 1, 2)
    a = shapes[None]  # (L, A, 2) -> (1, L, A, 2)
    overlap = np.minimum(g, a)  # (N, L, A, 2)
    if offsets is not None:
        overlap = np.minimum(overlap, np.maximum((g + a) / 2 - offsets[:, :, None, :], 0.0))  # (N, L, 1, 2) offsets
    inter = overlap[..., 0] * overlap[..., 1]  # (N, L, A)
    iou = inter / (g[..., 0] * g[..., 1] + a[..., 0] * a[..., 1] - inter)
    return iou.reshape(len(wh), shapes.shape[0] * shapes.shape[1]).max(axis=1)  # (N, L, A) -> (N, L*A) -> (N,)


def anchor_fitness(box_wh: np.ndarray, offsets: Optional[np.ndarray], recall_threshold: float = 0.7
                   ) -> Callable[[np.ndarray], float]:
    """Fitness of an (L, A, 2) anchor set, higher is better.

    With `offsets` (N, L, 2): centred mBIoU + grid mean best IoU + grid share of boxes at
    `recall_threshold`, so the hill climb keeps the centred fit while it raises what the RPN sees.
    Without: centred mBIoU + centred share at `recall_threshold`. Evaluated in float32 (it only
    ranks candidates; the reported metrics are float64). The per-box best IoUs come from the Numba
    kernel :func:`detkit.anchors.kernels.best_ious`, bitwise equal to :func:`best_ious_reference`;
    the means are NumPy's, so the fitness is the same number either way.
    """
    wh = np.asarray(box_wh, dtype=np.float32).reshape(-1, 2)
    gw, gh = np.ascontiguousarray(wh[:, 0]), np.ascontiguousarray(wh[:, 1])  # (N,) each
    use_offsets = offsets is not None
    off = np.asarray(offsets, dtype=np.float32) if use_offsets else np.zeros((len(wh), 0, 2), np.float32)
    dx, dy = np.ascontiguousarray(off[..., 0].T), np.ascontiguousarray(off[..., 1].T)  # (N, L) -> (L, N) each

    def fitness(shapes: np.ndarray) -> float:
        if len(wh) == 0:
            return 0.0
        centred, grid = best_ious(gw, gh, dx, dy, np.ascontiguousarray(shapes, dtype=np.float32), use_offsets)
        if not use_offsets:
            return float(centred.mean() + (centred >= recall_threshold).mean())
        return float(centred.mean() + grid.mean() + (grid >= recall_threshold).mean())

    return fitness


def best_ious_reference(box_wh: np.ndarray, offsets: Optional[np.ndarray], shapes: np.ndarray) -> tuple:
    """The array formula :func:`detkit.anchors.kernels.best_ious` implements, in float32.

    box_wh (N, 2), offsets (N, L, 2) or None, shapes (L, A, 2) -> (centred (N,), grid (N,)); grid is
    centred when `offsets` is None. Kept as the kernel's reference (tests) and for reading.
    """
    wh = np.asarray(box_wh, dtype=np.float32).reshape(-1, 2)
    shapes = np.asarray(shapes, dtype=np.float32)
    gw, gh = wh[:, 0, None, None], wh[:, 1, None, None]  # (N, 1, 1) each
    aw, ah = shapes[None, :, :, 0], shapes[None, :, :, 1]  # (1, L, A) each
    ow, oh = np.minimum(gw, aw), np.minimum(gh, ah)  # (N, L, A)
    total = gw * gh + aw * ah
    inter = ow * oh
    flat = (len(wh), shapes.shape[0] * shapes.shape[1])
    centred = (inter / (total - inter)).reshape(flat).max(axis=1)  # (N, L, A) -> (N, L*A) -> (N,)
    if offsets is None:
        return centred, centred
    off = np.asarray(offsets, dtype=np.float32)
    dx, dy = off[:, :, 0, None], off[:, :, 1, None]  # (N, L, 1) each
    ow = np.minimum(ow, np.maximum((gw + aw) * 0.5 - dx, 0.0))
    oh = np.minimum(oh, np.maximum((gh + ah) * 0.5 - dy, 0.0))
    inter = ow * oh
    grid = (inter / (total - inter)).reshape(flat).max(axis=1)  # (N, L, A) -> (N,)
    return centred, grid


def hill_climb(shapes: np.ndarray, fitness: Callable[[np.ndarray], float], *, steps: int, seed: int,
               frozen_levels: Optional[Sequence[bool]] = None, mutation_prob: float = 0.9,
               sigma: float = 0.1) -> np.ndarray:
    """Random multiplicative mutations of all shapes, each kept only when the fitness improves.

    Every (w, h) of a level not in `frozen_levels` is multiplied, with probability `mutation_prob`,
    by ``1 + u * sigma * z`` (u uniform, z normal; clipped to [0.3, 3]), as YOLOv5's evolution does.

    Args:
        shapes: (L, A, 2) starting shapes. fitness: maps (L, A, 2) shapes to a number (higher is better).
    Returns:
        float64 (L, A, 2), the best shapes found (the input when no mutation helped).
    """
    best = np.array(shapes, dtype=np.float64)
    if steps <= 0:
        return best
    rng = np.random.default_rng(seed)
    movable = np.ones(best.shape[0], dtype=bool) if frozen_levels is None else ~np.asarray(frozen_levels, bool)
    if not movable.any():
        return best
    best_fit = fitness(best)
    for _ in range(steps):
        factor = np.ones_like(best)
        while np.all(factor == 1.0):
            mask = rng.random(best.shape) < mutation_prob
            factor = (mask * rng.random() * rng.standard_normal(best.shape) * sigma + 1.0).clip(0.3, 3.0)
            factor[~movable] = 1.0
        cand = np.maximum(best * factor, MIN_FIT_SIDE)
        fit = fitness(cand)
        if fit > best_fit:
            best, best_fit = cand, fit
    return best


def fit_score(box_wh: np.ndarray, offsets: Optional[np.ndarray], shapes: np.ndarray) -> Dict[str, float]:
    """``{"mbiou": centred mean best IoU, "recall@0.7": grid (or centred) share of boxes at >= 0.7}``."""
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    shapes = np.asarray(shapes, dtype=np.float64)
    centred = _best_offset_iou_np(wh, None, shapes)
    best = centred if offsets is None else _best_offset_iou_np(wh, np.asarray(offsets, dtype=np.float64), shapes)
    return {"mbiou": float(centred.mean()), "recall@0.7": float((best >= 0.7).mean())}


def improves(after: Dict[str, float], before: Dict[str, float]) -> bool:
    """True when no score got worse and at least one got better."""
    keys = [k for k in before if k in after]
    return all(after[k] >= before[k] for k in keys) and any(after[k] > before[k] for k in keys)


def fit_kmeans(box_wh: np.ndarray, strides: Sequence[int], start_shapes: np.ndarray, *,
               offsets: Optional[np.ndarray] = None, restarts: int = 10, iters: int = 300,
               hill_climb_steps: int = 0, seed: int = 0) -> FitResult:
    """The kmeans mode: per-level IoU k-means, optional hill climb, adopted only if it improves.

    Boxes with a side under MIN_FIT_SIDE are dropped; each remaining box gets a level by
    :func:`assign_levels`, and each level with at least A boxes is clustered into A shapes
    (a level with fewer keeps its starting shapes; when a level has fewer than A distinct shapes
    the missing ones are its starting shapes). The hill climb then mutates the fitted levels under
    :func:`anchor_fitness`. The candidate is adopted when :func:`fit_score` improves (no metric worse,
    one better) over `start_shapes`.

    Args:
        box_wh: (N, 2); strides: L strides; start_shapes: (L, A, 2), usually the manual set;
        offsets: (N, L, 2) grid offsets of the same boxes, or None for centred fitness.
    """
    start = np.asarray(start_shapes, dtype=np.float64)
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    keep = (wh >= MIN_FIT_SIDE).all(axis=1)
    wh = wh[keep]
    offsets = None if offsets is None else np.asarray(offsets, dtype=np.float64)[keep]
    num_levels, num_anchors = start.shape[:2]
    levels = assign_levels(wh, strides)
    cand = start.copy()
    fitted = []
    for level in range(num_levels):
        level_wh = wh[levels == level]
        if len(level_wh) < num_anchors:
            fitted.append(False)
            continue
        centres = kmeans_shapes(level_wh, num_anchors, restarts=restarts, iters=iters, seed=seed + level)
        if len(centres) < num_anchors:  # fewer distinct shapes than anchors: keep the farthest starting shapes
            spare = _centred_iou_np(start[level], centres).max(axis=1).argsort()[: num_anchors - len(centres)]
            centres = np.concatenate([centres, start[level][np.sort(spare)]])
        cand[level] = centres
        fitted.append(True)
    if hill_climb_steps > 0 and len(wh):
        cand = hill_climb(cand, anchor_fitness(wh, offsets), steps=hill_climb_steps, seed=seed,
                          frozen_levels=[not f for f in fitted])
    return decide(wh, offsets, start, cand, fitted, "kmeans")


def decide(box_wh: np.ndarray, offsets: Optional[np.ndarray], start: np.ndarray, cand: np.ndarray,
           fitted: List[bool], name: str) -> FitResult:
    """Adopt `cand` over `start` only when :func:`improves` says so; say why either way."""
    if len(box_wh) == 0:
        return FitResult(shapes=start, candidate=cand, adopted=False, fitted_levels=fitted,
                         reason=f"{name}: no training boxes with both sides >= {MIN_FIT_SIDE:g} px; "
                                "kept the starting anchors")
    before, after = fit_score(box_wh, offsets, start), fit_score(box_wh, offsets, cand)
    adopted = improves(after, before)
    change = ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in before)
    reason = f"{name}: {'adopted' if adopted else 'not adopted (no improvement), kept the starting anchors'} ({change})"
    return FitResult(shapes=cand if adopted else start, candidate=cand, adopted=adopted, reason=reason,
                     before=before, after=after, fitted_levels=fitted)
