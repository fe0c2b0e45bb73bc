"""Max-IoU assignment of anchors (or proposals) to ground-truth boxes, with ignore regions.

Shape shorthand: N anchors or proposals, M ground-truth boxes, K ignore regions (crowd or
difficult objects), 4 = (x1, y1, x2, y2).

Rules, in this order (the IoU work is one fused Numba kernel, see detkit.ops.matching):

1. Thresholds: best IoU >= pos_iou_thr -> positive (1); < neg_iou_thr -> negative (0);
   in between -> ignored (-1).
2. Low-quality matches (``allow_low_quality_matches``), torchvision's and Detectron2's rule: an
   anchor whose IoU with a ground truth equals that ground truth's best IoU over all anchors
   (ties included) becomes positive, and keeps its own best ground truth as its match
   (MMDetection instead reassigns it to that ground truth). As in torchvision, a ground truth
   that overlaps no anchor at all has best IoU 0 and so turns every anchor positive; with dense
   anchor grids this does not happen.
3. Ignore regions (``ignore_iof_thr`` set and ``gt_ignore`` given): an anchor that is negative
   after 1-2 and whose intersection with a region, divided by the anchor's own area, exceeds
   ignore_iof_thr becomes ignored (-1). Positives stay positive: a box that matches a real
   object is a valid training example even inside a crowd region.
4. No ground truth: every anchor is negative (0) unless step 3 ignores it, and matched_idxs is 0.

Steps 1-2 give exactly ``torchvision.models.detection._utils.Matcher(pos, neg, allow)`` applied
to ``torchvision.ops.box_iou(gt_boxes, anchors)``.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from detkit.ops.matching import match_max_iou

__all__ = ["MaxIoUAssigner"]


class MaxIoUAssigner:
    """Assign each anchor its best ground truth and a label in {-1 ignore, 0 negative, 1 positive}.

    Args:
        pos_iou_thr: IoU at or above which an anchor is positive, in [0, 1].
        neg_iou_thr: IoU below which an anchor is negative, in [0, pos_iou_thr].
        allow_low_quality_matches: torchvision's low-quality rule (see the module docstring).
        ignore_iof_thr: intersection-over-anchor-area above which an ignore region turns a
            negative anchor into an ignored one; None disables ignore regions.
    """

    def __init__(self, *, pos_iou_thr: float, neg_iou_thr: float, allow_low_quality_matches: bool = True,
                 ignore_iof_thr: Optional[float] = None):
        if not 0.0 <= neg_iou_thr <= pos_iou_thr <= 1.0:
            raise ValueError(f"need 0 <= neg_iou_thr <= pos_iou_thr <= 1, got neg_iou_thr={neg_iou_thr}, "
                             f"pos_iou_thr={pos_iou_thr}")
        if ignore_iof_thr is not None and not 0.0 <= ignore_iof_thr <= 1.0:
            raise ValueError(f"ignore_iof_thr must be in [0, 1] or None, got {ignore_iof_thr}")
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = float(neg_iou_thr)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.ignore_iof_thr = None if ignore_iof_thr is None else float(ignore_iof_thr)

    def __repr__(self) -> str:
        return (f"MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches}, ignore_iof_thr={self.ignore_iof_thr})")

    def assign(self, anchors: Tensor, gt_boxes: Tensor, gt_ignore: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Match anchors to ground truth.

        Args:
            anchors: Tensor[N, 4] xyxy (float; CUDA inputs are computed on the CPU and moved back).
            gt_boxes: Tensor[M, 4] xyxy, M may be 0.
            gt_ignore: Tensor[K, 4] ignore regions or None; used only when ignore_iof_thr is set.
        Returns:
            matched_idxs: Tensor[N] int64, each anchor's best ground truth in [0, M) (0 if M == 0),
                so ``gt_boxes[matched_idxs]`` is safe whenever M > 0.
            labels: Tensor[N] int8 in {-1, 0, 1}.
        """
        use_ignore = self.ignore_iof_thr is not None and gt_ignore is not None and gt_ignore.shape[0] > 0
        return match_max_iou(
            anchors, gt_boxes, self.pos_iou_thr, self.neg_iou_thr, self.allow_low_quality_matches,
            ignore_boxes=gt_ignore if use_ignore else None,
            ignore_iof_thresh=self.ignore_iof_thr if use_ignore else None)
