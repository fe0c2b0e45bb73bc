"""Soft-NMS (Bodla et al., 2017): decay the scores of overlapping boxes instead of removing them.

Linear decay multiplies the score of a box by ``1 - IoU`` when its IoU with the box just kept
exceeds iou_threshold; gaussian decay multiplies it by ``exp(-IoU**2 / sigma)`` for every
overlapping box. Boxes whose score falls below score_threshold are dropped. Everything is
computed in float64 on the CPU; the tests compare with a plain-Python reference.

``batched_soft_nms`` runs it per group (class), as ``batched_nms`` does for hard NMS, and returns
the survivors of all groups ranked by their decayed scores.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch
from torch import Tensor

from detkit.ops.box_args import check_boxes_scores

__all__ = ["soft_nms", "batched_soft_nms"]


@nb.njit(cache=True, error_model="numpy")
def soft_nms_kernel(boxes, scores, linear, sigma, iou_threshold, score_threshold):
    """Soft-NMS in float64. boxes: (N, 4) float64; scores: (N,) float64.

    Repeatedly keeps the box with the highest current score (lowest index on ties), then multiplies
    the score of every remaining box j by ``1 - IoU`` when ``IoU > iou_threshold`` (linear) or by
    ``exp(-IoU**2 / sigma)`` (gaussian), and drops boxes whose score falls below score_threshold.
    Returns (kept indices (K,) int64, their scores at selection (K,) float64), scores non-increasing.
    """
    n = boxes.shape[0]
    cur = scores.copy()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.empty(n, np.int64)
    na = 0
    for i in range(n):
        if cur[i] >= score_threshold:
            alive[na] = i
            na += 1
    keep = np.empty(n, np.int64)
    kept_scores = np.empty(n)
    nk = 0
    while na > 0:
        best = 0
        for t in range(1, na):
            if cur[alive[t]] > cur[alive[best]]:
                best = t
        i = alive[best]
        keep[nk] = i
        kept_scores[nk] = cur[i]
        nk += 1
        ix1, iy1, ix2, iy2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        m = 0
        for t in range(na):
            j = alive[t]
            if j == i:
                continue
            w = max(0.0, min(ix2, boxes[j, 2]) - max(ix1, boxes[j, 0]))
            h = max(0.0, min(iy2, boxes[j, 3]) - max(iy1, boxes[j, 1]))
            inter = w * h
            if inter > 0:
                iou = inter / (areas[i] + areas[j] - inter)
                if linear:
                    if iou > iou_threshold:
                        cur[j] *= 1.0 - iou
                else:
                    cur[j] *= math.exp(-(iou * iou) / sigma)
            if cur[j] >= score_threshold:
                alive[m] = j
                m += 1
        na = m
    return keep[:nk], kept_scores[:nk]


def _to_float64(t: Tensor, name: str) -> np.ndarray:
    arr = t.detach().cpu().double().contiguous().numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def soft_nms(boxes: Tensor, scores: Tensor, *, method: str = "gaussian", sigma: float = 0.5,
             iou_threshold: float = 0.3, score_threshold: float = 0.001) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., 2017): decay the scores of overlapping boxes instead of removing them.

    Computed in float64 on the CPU (CUDA inputs are copied to the host and results moved back).

    Args:
        boxes: Tensor[N, 4]; scores: Tensor[N].
        method: "linear" (score *= 1 - IoU where IoU > iou_threshold) or "gaussian"
            (score *= exp(-IoU**2 / sigma) for every overlapping box).
        sigma: gaussian width (> 0). iou_threshold: linear decay threshold.
        score_threshold: boxes whose decayed score falls below this are dropped.
    Returns:
        (keep Tensor[K] int64, scores Tensor[K] in the input dtype): kept indices in selection order
        and their decayed scores (non-increasing); ties go to the lower index.
    """
    check_boxes_scores(boxes, scores, same_dtype=False)
    if method not in ("linear", "gaussian"):
        raise ValueError(f"method must be 'linear' or 'gaussian', got {method!r}")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    device, dtype = boxes.device, scores.dtype
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=device), torch.empty((0,), dtype=dtype, device=device)
    boxes_np = _to_float64(boxes, "boxes")
    scores_np = _to_float64(scores, "scores")
    keep, kept_scores = soft_nms_kernel(boxes_np, scores_np, method == "linear", float(sigma),
                                        float(iou_threshold), float(score_threshold))
    return torch.from_numpy(keep).to(device), torch.from_numpy(kept_scores).to(device=device, dtype=dtype)


def batched_soft_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, *, method: str = "gaussian",
                     sigma: float = 0.5, iou_threshold: float = 0.3,
                     score_threshold: float = 0.001) -> tuple[Tensor, Tensor]:
    """Soft-NMS within each group of ``idxs`` (boxes of different groups never decay each other).

    Args:
        boxes: Tensor[N, 4]; scores: Tensor[N]; idxs: int Tensor[N], the group (class) of each box.
        method, sigma, iou_threshold, score_threshold: as :func:`soft_nms`.
    Returns:
        (keep Tensor[K] int64, scores Tensor[K] in the scores' dtype): the kept indices of all groups
        ordered by decayed score, highest first (ties: lower group, then selection order), and
        those decayed scores.
    """
    check_boxes_scores(boxes, scores, same_dtype=False)
    if idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"idxs must have shape ({boxes.shape[0]},), got {tuple(idxs.shape)}")
    device, dtype = boxes.device, scores.dtype
    keeps, kept = [], []
    # A loop over the groups present: soft-NMS costs O(n^2) per group, so running the groups
    # apart is cheaper than one pass over all boxes with the coordinate-offset trick.
    for group in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == group).flatten()
        keep, decayed = soft_nms(boxes[members], scores[members], method=method, sigma=sigma,
                                 iou_threshold=iou_threshold, score_threshold=score_threshold)
        keeps.append(members[keep])
        kept.append(decayed)
    if not keeps:
        return torch.empty((0,), dtype=torch.int64, device=device), torch.empty((0,), dtype=dtype, device=device)
    keep, decayed = torch.cat(keeps), torch.cat(kept)
    order = torch.sort(decayed, descending=True, stable=True).indices
    return keep[order], decayed[order]
