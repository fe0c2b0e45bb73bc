"""detkit.ops: pure box functions and kernels, used like ``torchvision.ops``.

    from detkit.ops import nms, batched_nms, box_iou

Boxes are (x1, y1, x2, y2) in absolute pixels; the functions take and return tensors and keep
torchvision's signatures where it has the same operator (``nms(boxes, scores, iou_threshold)``,
``batched_nms(boxes, scores, idxs, iou_threshold)``, ``roi_align(...)``).

    boxes.py        box_area, box_iou, box_iof, centred_iou, xyxy <-> cxcywh, clip, remove_small
    nms.py          nms, batched_nms, offset_by_group (their Numba kernels: nms_kernels.py)
    score_order.py  the order by score every ranking follows (equal scores by increasing index), topk_stable
    soft_nms.py     soft_nms, batched_soft_nms (linear or gaussian score decay; per class)
    box_voting.py   box_voting (kept boxes -> score-weighted mean of their class's overlapping candidates)
    box_losses.py   generalized_box_iou_loss (1 - GIoU of paired boxes, as torchvision's)
    matching.py     match_max_iou, max_iou_stats, max_iof (fused IoU + max, no A x G matrix)
    roi_align.py    roi_align, multilevel_roi_align (Numba on the CPU, torchvision's sampling)

The NumPy-level kernels stay in their modules (e.g. ``detkit.ops.nms_kernels.nms_kernel``).
Importing this package imports every module above (as ``torchvision.ops`` does): ``nms``,
``soft_nms`` and ``roi_align`` name both a module and its function, and the package attribute is
the function. So ``import detkit.ops.nms as m`` binds the function too; import from the module
by name instead (``from detkit.ops.nms import batched_nms``).
"""

from detkit.ops.box_losses import generalized_box_iou_loss
from detkit.ops.box_voting import box_voting
from detkit.ops.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iof,
    box_iou,
    box_xyxy_to_cxcywh,
    centred_iou,
    clip_boxes,
    remove_small_boxes,
)
from detkit.ops.matching import match_max_iou, max_iof, max_iou_stats
from detkit.ops.nms import batched_nms, nms, offset_by_group
from detkit.ops.roi_align import multilevel_roi_align, roi_align
from detkit.ops.score_order import topk_stable
from detkit.ops.soft_nms import batched_soft_nms, soft_nms

__all__ = [
    # boxes.py
    "box_area", "box_iou", "box_iof", "centred_iou", "box_xyxy_to_cxcywh", "box_cxcywh_to_xyxy", "clip_boxes",
    "remove_small_boxes",
    # box_losses.py
    "generalized_box_iou_loss",
    # nms.py, soft_nms.py, box_voting.py, score_order.py
    "nms", "batched_nms", "offset_by_group", "soft_nms", "batched_soft_nms", "box_voting", "topk_stable",
    # matching.py
    "match_max_iou", "max_iou_stats", "max_iof",
    # roi_align.py
    "roi_align", "multilevel_roi_align",
]
