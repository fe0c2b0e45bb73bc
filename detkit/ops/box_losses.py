"""IoU-based box regression losses on paired (x1, y1, x2, y2) boxes.

Shape shorthand: N pairs of boxes (prediction i against target i, not all pairs).

The generalised IoU (Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019) is the
IoU minus the part of the smallest enclosing box C that the union does not cover:
``GIoU = IoU - (area(C) - union) / area(C)``, in [-1, 1]. Its loss ``1 - GIoU`` (in [0, 2]) measures
the overlap itself, which is what AP at high IoU thresholds rewards, and unlike plain ``1 - IoU`` it
still has a gradient when the boxes do not overlap. Same definition and epsilon as
``torchvision.ops.generalized_box_iou_loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.ops.boxes import box_area

__all__ = ["generalized_box_iou_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def generalized_box_iou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - GIoU`` of each pair of boxes.

    Args:
        boxes1, boxes2: Tensor[N, 4] xyxy, paired row by row (x2 >= x1 and y2 >= y1 expected; an
            inverted box counts as empty for the intersection).
        reduction: "none" (Tensor[N]), "mean" or "sum" (scalars; the mean of no pairs is 0, not NaN).
        eps: added to the union and the enclosing area, so that degenerate (zero-area) pairs stay finite.
    Returns:
        Tensor[N] in [0, 2] (or its sum / mean), in the boxes' dtype.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    if boxes1.dim() != 2 or boxes1.shape[-1] != 4 or boxes1.shape != boxes2.shape:
        raise ValueError(f"boxes1 and boxes2 must both have shape (N, 4), got {tuple(boxes1.shape)} "
                         f"and {tuple(boxes2.shape)}")
    x1, y1, x2, y2 = boxes1.unbind(dim=1)
    u1, v1, u2, v2 = boxes2.unbind(dim=1)
    inter_w = (torch.min(x2, u2) - torch.max(x1, u1)).clamp(min=0)
    inter_h = (torch.min(y2, v2) - torch.max(y1, v1)).clamp(min=0)
    inter = inter_w * inter_h
    union = box_area(boxes1) + box_area(boxes2) - inter
    iou = inter / (union + eps)
    enclosing = (torch.max(x2, u2) - torch.min(x1, u1)) * (torch.max(y2, v2) - torch.min(y1, v1))
    loss = 1 - (iou - (enclosing - union) / (enclosing + eps))  # (N,)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    return loss
