"""Max-IoU matching in plain torch, chunked over the anchors: the path of CUDA tensors.

Shape shorthand: N anchors, M ground-truth boxes, K ignore regions, C anchors of one chunk.

The Numba kernels of :mod:`detkit.ops.matching` take CPU arrays only; a CUDA tensor handed to them
would travel to the host and back inside every training step. These functions compute the same
answers with torch operators on the tensors' own device, without a host synchronisation (every
shape is known in advance), and without the N x M IoU matrix: the anchors are visited in chunks of
``max(1, max_pairs // M)`` so that one chunk's intermediates hold about ``max_pairs`` values.

Semantics are those of ``torchvision.ops.box_iou(gt, anchors)`` + torchvision's ``Matcher`` (and so
of the Numba kernels, which the tests compare bit for bit on the CPU):

* IoU with torchvision's float operations in the boxes' dtype (float16 / bfloat16 in float32).
* Each anchor's best ground truth: torch.max over the ground truth (first index among equal maxima,
  NaN counts as the maximum).
* Labels: ``iou < bg`` -> 0, ``bg <= iou < fg`` -> -1, else 1; with M == 0 every anchor is 0.
* Low-quality matches: an anchor whose IoU with some ground truth equals that ground truth's best
  IoU over all anchors (exact equality) becomes positive, keeping its own best ground truth. The
  best IoU per ground truth needs every chunk, so the chunks are visited twice.
* Ignore regions: an anchor still negative whose largest intersection over its own area with a
  region exceeds the threshold becomes -1.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from detkit.ops.boxes import _intersection as _inter  # torchvision's operations, pairwise (P, Q)
from detkit.ops.boxes import box_area as _area

__all__ = ["DEFAULT_MAX_PAIRS", "match_max_iou_torch", "max_iou_stats_torch", "max_iof_torch"]

# Pairs (anchor, ground truth) per chunk: 2**22 float32 values are 16 MiB per intermediate.
DEFAULT_MAX_PAIRS = 1 << 22


def _compute_dtype(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _iou(gt: Tensor, gt_area: Tensor, anchors: Tensor) -> Tensor:
    """box_iou(gt, anchors) with the gt areas precomputed: (M, 4), (M,), (C, 4) -> (M, C)."""
    inter = _inter(gt, anchors)
    return inter / (gt_area[:, None] + _area(anchors)[None, :] - inter)


def _chunks(n: int, m: int, max_pairs: int):
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    size = max(1, max_pairs // max(m, 1))
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def max_iou_stats_torch(anchors: Tensor, gt_boxes: Tensor, *, max_pairs: int = DEFAULT_MAX_PAIRS
                        ) -> Tuple[Tensor, Tensor, Tensor]:
    """Each anchor's best ground truth and IoU, and each ground truth's best IoU.

    Args:
        anchors: Tensor[N, 4]; gt_boxes: Tensor[M, 4] (N, M >= 1), same device.
    Returns:
        (best_gt int64[N], best_iou Tensor[N], gt_best Tensor[M]) equal to
        ``iou = box_iou(gt_boxes, anchors); iou.max(0)`` and ``iou.max(1).values``.
    """
    anchors = _compute_dtype(anchors.detach())
    gt = gt_boxes.detach().to(anchors.dtype)
    gt_area = _area(gt)
    best_iou = anchors.new_empty(anchors.shape[0])
    best_gt = torch.empty(anchors.shape[0], dtype=torch.int64, device=anchors.device)
    gt_best = None
    for start, end in _chunks(anchors.shape[0], gt.shape[0], max_pairs):
        iou = _iou(gt, gt_area, anchors[start:end])  # (M, C)
        best_iou[start:end], best_gt[start:end] = iou.max(dim=0)
        chunk_best = iou.max(dim=1).values  # (M,)
        gt_best = chunk_best if gt_best is None else torch.maximum(gt_best, chunk_best)  # NaN propagates
    return best_gt, best_iou, gt_best


def _low_quality(anchors: Tensor, gt: Tensor, gt_best: Tensor, max_pairs: int) -> Tensor:
    """bool[N]: the anchor's IoU with some ground truth equals that ground truth's best IoU."""
    gt_area = _area(gt)
    flagged = torch.empty(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    for start, end in _chunks(anchors.shape[0], gt.shape[0], max_pairs):
        flagged[start:end] = (_iou(gt, gt_area, anchors[start:end]) == gt_best[:, None]).any(dim=0)
    return flagged


def max_iof_torch(boxes: Tensor, regions: Tensor, *, max_pairs: int = DEFAULT_MAX_PAIRS) -> Tensor:
    """Each box's largest intersection over its own area with any region (0 without area or regions).

    Args:
        boxes: Tensor[N, 4]; regions: Tensor[K, 4] (K may be 0).
    Returns:
        Tensor[N]: ``box_iof(boxes, regions).max(1).values``.
    """
    boxes = _compute_dtype(boxes.detach())
    regions = regions.detach().to(boxes.dtype)
    out = boxes.new_zeros(boxes.shape[0])
    if regions.shape[0] == 0:
        return out
    for start, end in _chunks(boxes.shape[0], regions.shape[0], max_pairs):
        chunk = boxes[start:end]
        area = _area(chunk)[:, None]  # (C, 1)
        inter = _inter(chunk, regions)  # (C, K)
        iof = torch.where(area > 0, inter / area.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))
        out[start:end] = iof.max(dim=1).values
    return out


def match_max_iou_torch(anchors: Tensor, gt_boxes: Tensor, fg_iou_thresh: float, bg_iou_thresh: float,
                        allow_low_quality_matches: bool, *, ignore_boxes: Optional[Tensor] = None,
                        ignore_iof_thresh: Optional[float] = None,
                        max_pairs: int = DEFAULT_MAX_PAIRS) -> Tuple[Tensor, Tensor]:
    """:func:`detkit.ops.matching.match_max_iou` in torch on the anchors' device (arguments and results alike).

    Args:
        anchors: Tensor[N, 4]; gt_boxes: Tensor[M, 4]; ignore_boxes: Tensor[K, 4] or None.
        max_pairs: about how many (anchor, box) pairs one chunk holds (memory bound, not a result cap).
    Returns:
        (matched_idxs int64[N], labels int8[N] in {-1, 0, 1}).
    """
    device = anchors.device
    n, m = anchors.shape[0], gt_boxes.shape[0]
    work = _compute_dtype(anchors.detach())
    gt = gt_boxes.detach().to(device=device, dtype=work.dtype)
    if m == 0:
        matched = torch.zeros(n, dtype=torch.int64, device=device)
        labels = torch.zeros(n, dtype=torch.int8, device=device)
    else:
        matched, best_iou, gt_best = max_iou_stats_torch(work, gt, max_pairs=max_pairs)
        # torch.where, not masked assignment: no mask is turned into indices (no host synchronisation).
        # A Python float is compared in the boxes' dtype, as torchvision and the Numba kernel compare.
        labels = torch.where(best_iou < bg_iou_thresh, 0, torch.where(best_iou < fg_iou_thresh, -1, 1))
        if allow_low_quality_matches:
            labels = torch.where(_low_quality(work, gt, gt_best, max_pairs), 1, labels)
        labels = labels.to(torch.int8)
    if ignore_boxes is not None and ignore_iof_thresh is not None and ignore_boxes.shape[0] > 0:
        iof = max_iof_torch(work, ignore_boxes.to(device), max_pairs=max_pairs)
        labels = torch.where((labels == 0) & (iof > ignore_iof_thresh), torch.full_like(labels, -1), labels)
    return matched, labels
