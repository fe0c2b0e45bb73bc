"""Box regression targets: (dx, dy, dw, dh) of a box relative to an anchor, with weights.

Shape shorthand: N boxes (anchors or RoIs, one target each), C = 1 or the number of classes
(class-specific regression), 4 = (x1, y1, x2, y2) or (dx, dy, dw, dh).

The math and the order of float operations are torchvision's ``BoxCoder`` (encode_single /
decode_single), so results match it bit for bit on the same dtype:

    dx = wx * (gt_cx - a_cx) / a_w        dw = ww * log(gt_w / a_w)
    x  = dx / wx * a_w + a_cx             w  = exp(min(dw / ww, clamp)) * a_w
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder"]


class BoxCoder:
    """Encode boxes as deltas from anchors and decode deltas back to boxes.

    Args:
        weights: (wx, wy, ww, wh) multipliers of the four deltas, all > 0 (torchvision uses
            (1, 1, 1, 1) in the RPN and (10, 10, 5, 5) in the RoI head).
        clamp: upper bound on dw and dh (after dividing by the weights) before exp() in decode,
            so that a wild prediction cannot overflow; log(1000 / 16) as in torchvision.
    """

    def __init__(self, *, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clamp: float = math.log(1000.0 / 16)):
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or not all(w > 0 and math.isfinite(w) for w in weights):
            raise ValueError(f"weights must be 4 positive finite numbers (wx, wy, ww, wh), got {weights}")
        if not clamp > 0:
            raise ValueError(f"clamp must be > 0, got {clamp}")
        self.weights = weights
        self.clamp = float(clamp)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, clamp={self.clamp:.4f})"

    def encode(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets of gt_boxes relative to anchors (row i against row i).

        Args:
            gt_boxes: Tensor[N, 4] matched ground truth, xyxy.
            anchors: Tensor[N, 4] anchors or proposals with positive width and height, xyxy.
        Returns:
            Tensor[N, 4] (dx, dy, dw, dh) in gt_boxes' dtype.
        """
        _check_pairs(gt_boxes, anchors)
        anchors = anchors.to(gt_boxes.dtype)
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=gt_boxes.dtype, device=gt_boxes.device)
        ex_widths = anchors[:, 2] - anchors[:, 0]
        ex_heights = anchors[:, 3] - anchors[:, 1]
        ex_ctr_x = anchors[:, 0] + 0.5 * ex_widths
        ex_ctr_y = anchors[:, 1] + 0.5 * ex_heights
        gt_widths = gt_boxes[:, 2] - gt_boxes[:, 0]
        gt_heights = gt_boxes[:, 3] - gt_boxes[:, 1]
        gt_ctr_x = gt_boxes[:, 0] + 0.5 * gt_widths
        gt_ctr_y = gt_boxes[:, 1] + 0.5 * gt_heights
        dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        dw = ww * torch.log(gt_widths / ex_widths)
        dh = wh * torch.log(gt_heights / ex_heights)
        return torch.stack((dx, dy, dw, dh), dim=1)  # 4 x (N,) -> (N, 4)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from deltas relative to anchors.

        Args:
            deltas: Tensor[N, 4 * C] (dx, dy, dw, dh) per class.
            anchors: Tensor[N, 4] xyxy.
        Returns:
            Tensor[N, 4 * C] xyxy boxes in deltas' dtype (not clipped to the image).
        """
        if deltas.dim() != 2 or deltas.shape[1] % 4 != 0 or deltas.shape[1] == 0:
            raise ValueError(f"deltas must have shape (N, 4 * C), got {tuple(deltas.shape)}")
        if anchors.dim() != 2 or anchors.shape[1] != 4 or anchors.shape[0] != deltas.shape[0]:
            raise ValueError(f"anchors must have shape ({deltas.shape[0]}, 4) to match deltas "
                             f"{tuple(deltas.shape)}, got {tuple(anchors.shape)}")
        anchors = anchors.to(deltas.dtype)
        widths = anchors[:, 2] - anchors[:, 0]
        heights = anchors[:, 3] - anchors[:, 1]
        ctr_x = anchors[:, 0] + 0.5 * widths
        ctr_y = anchors[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx  # (N, 4C) -> (N, C)
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.clamp)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        half_w = torch.tensor(0.5, dtype=pred_ctr_x.dtype, device=pred_w.device) * pred_w
        half_h = torch.tensor(0.5, dtype=pred_ctr_y.dtype, device=pred_h.device) * pred_h
        boxes = torch.stack((pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
                            dim=2)  # 4 x (N, C) -> (N, C, 4)
        return boxes.flatten(1)  # (N, C, 4) -> (N, 4C)


def _check_pairs(gt_boxes: Tensor, anchors: Tensor) -> None:
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"gt_boxes must have shape (N, 4), got {tuple(gt_boxes.shape)}")
    if anchors.shape != gt_boxes.shape:
        raise ValueError(f"anchors must have the shape of gt_boxes {tuple(gt_boxes.shape)}, got {tuple(anchors.shape)}")
