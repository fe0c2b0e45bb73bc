"""Pure tensor functions on boxes in (x1, y1, x2, y2) absolute pixel coordinates.

Shape shorthand: N, M boxes. Every function works on any float dtype and device and keeps it.
Widths and heights are ``x2 - x1`` and ``y2 - y1`` (continuous coordinates, no +1), as in
torchvision.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area", "box_iou", "box_iof", "box_xyxy_to_cxcywh", "box_cxcywh_to_xyxy", "clip_boxes",
    "remove_small_boxes", "centred_iou",
]


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box. boxes: (N, 4) -> (N,). Inverted boxes give a negative or zero area."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection areas. boxes1: (N, 4), boxes2: (M, 4) -> (N, M)."""
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)  # (N, M, 2)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union, exactly as torchvision.ops.box_iou computes it.

    Args:
        boxes1: Tensor[N, 4]; boxes2: Tensor[M, 4].
    Returns:
        Tensor[N, M]. Two zero-area boxes give NaN (0 / 0), as in torchvision.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    inter = _intersection(boxes1, boxes2)
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def box_iof(boxes: Tensor, regions: Tensor) -> Tensor:
    """Intersection over the area of the first argument ("foreground").

    Args:
        boxes: Tensor[N, 4]; regions: Tensor[M, 4].
    Returns:
        Tensor[N, M]: area(box_i & region_j) / area(box_i); 0 where box_i has no area.
    """
    inter = _intersection(boxes, regions)
    area = box_area(boxes).clamp(min=0)[:, None]
    return torch.where(area > 0, inter / area.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(N, 4) xyxy -> (N, 4) (centre x, centre y, width, height)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(N, 4) (centre x, centre y, width, height) -> (N, 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip boxes to an image of ``size = (height, width)``. boxes: (..., 4) -> (..., 4)."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    # (..., 2) and (..., 2) -> (..., 2, 2) -> (..., 4) in x1, y1, x2, y2 order
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64, increasing) of boxes whose width and height are both >= min_size. boxes: (N, 4)."""
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    keep = (ws >= min_size) & (hs >= min_size)
    return torch.where(keep)[0]


def centred_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of box shapes placed on a common centre (scale-invariant, symmetric).

    ``IoU_c(g, a) = min(gw, aw) * min(gh, ah) / (gw * gh + aw * ah - min(gw, aw) * min(gh, ah))``.

    Args:
        wh1: Tensor[N, 2] (w, h); wh2: Tensor[M, 2] (w, h), all > 0.
    Returns:
        Tensor[N, M] in [0, 1].
    """
    inter = torch.min(wh1[:, None, 0], wh2[None, :, 0]) * torch.min(wh1[:, None, 1], wh2[None, :, 1])  # (N, M)
    area1 = wh1[:, 0] * wh1[:, 1]
    area2 = wh2[:, 0] * wh2[:, 1]
    return inter / (area1[:, None] + area2[None, :] - inter)
