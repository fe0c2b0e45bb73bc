"""Non-maximum suppression on tensors: ``nms`` and ``batched_nms`` with torchvision's signatures.

Shape shorthand: N boxes, K kept boxes.

Both give exactly torchvision's CPU answers, ties included:

* Order: scores sorted with ``torch.sort(scores, stable=True, descending=True)``, the very call
  torchvision's CPU kernel makes, so equal scores are visited (and returned) by increasing index.
* Suppression: box j is dropped when an already kept box i has ``IoU(i, j) > iou_threshold``, with
  the IoU computed in the input dtype as torchvision's C++ kernel does; the Numba kernels that do
  it, and how they prune the search, are in :mod:`detkit.ops.nms_kernels`.
* float16 / bfloat16: torchvision's CPU kernel rejects them; detkit computes on the exactly upcast
  float32 values, i.e. the result is ``torchvision.ops.nms(boxes.float(), scores.float(), t)``.
* CUDA tensors are handed to torchvision's CUDA kernel unchanged (no host round trip, so their
  values are not checked for NaN / inf).

The wrappers check the arguments, convert CPU tensors to NumPy once, and convert the kept
indices back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from detkit.ops.box_args import check_boxes_scores
from detkit.ops.nms_kernels import batched_nms_kernel, nms_kernel

__all__ = ["nms", "batched_nms"]

# torchvision.ops.batched_nms switches from the coordinate trick to per-class NMS above this
# number of box coordinates on the CPU; the two can differ (offsets change IoU rounding), so
# detkit follows the same switch to return identical results.
_TORCHVISION_VANILLA_NUMEL = 4000


def _to_numpy(t: Tensor, name: str) -> np.ndarray:
    """CPU tensor -> contiguous float32/float64 array; raises ValueError on NaN or inf."""
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    arr = t.detach().contiguous().numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _score_order(scores: Tensor) -> np.ndarray:
    """torchvision's CPU visiting order: stable descending sort (equal scores by increasing index)."""
    return torch.sort(scores.detach(), dim=0, descending=True, stable=True)[1].numpy()


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, identical to ``torchvision.ops.nms`` on the CPU.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), float16/32/64, CPU or CUDA.
        scores: Tensor[N], same dtype and device.
        iou_threshold: a box is discarded when its IoU with a kept, higher-scoring box is
            strictly greater than this.
    Returns:
        Tensor[K] int64: kept indices by decreasing score (equal scores by increasing index).
    Raises:
        ValueError: wrong shapes or dtypes, or NaN / inf in boxes or scores (CPU).
    """
    check_boxes_scores(boxes, scores, same_dtype=True)
    if boxes.device.type != "cpu":
        import torchvision
        return torchvision.ops.nms(boxes, scores, iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64)
    boxes_np = _to_numpy(boxes, "boxes")
    scores_t = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    _to_numpy(scores_t, "scores")
    keep = nms_kernel(boxes_np, _score_order(scores_t), float(iou_threshold))
    return torch.from_numpy(keep)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently per category, identical to ``torchvision.ops.batched_nms`` (CPU).

    torchvision uses the coordinate-offset trick when ``boxes.numel() <= 4000`` and per-class NMS
    above; the offsets can change the IoU rounding, so detkit takes the same branch. Per-class
    NMS is one Numba call (each class in its own tile of one grid); when kept boxes have equal
    scores, their order comes from the same final torch sort torchvision uses.

    Args:
        boxes: Tensor[N, 4]; scores: Tensor[N]; idxs: Tensor[N] integer category of each box.
        iou_threshold: as in :func:`nms`.
    Returns:
        Tensor[K] int64: kept indices by decreasing score.
    """
    check_boxes_scores(boxes, scores, same_dtype=True)
    if not isinstance(idxs, Tensor) or idxs.shape != scores.shape or idxs.is_floating_point() or idxs.is_complex():
        raise ValueError(f"idxs must be an integer tensor of shape ({boxes.shape[0]},), got "
                         f"{getattr(idxs, 'dtype', type(idxs).__name__)} of shape {tuple(getattr(idxs, 'shape', ()))}")
    if boxes.device.type != "cpu":
        import torchvision
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64)
    if boxes.dtype in (torch.float16, torch.bfloat16):
        boxes, scores = boxes.float(), scores.float()
    if boxes.numel() <= _TORCHVISION_VANILLA_NUMEL:
        _to_numpy(boxes, "boxes")
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    boxes_np = _to_numpy(boxes, "boxes")
    scores_np = _to_numpy(scores, "scores")
    classes = idxs.detach().to(torch.int64).contiguous().numpy()
    keep_np, ties = batched_nms_kernel(boxes_np, scores_np, _score_order(scores), classes, float(iou_threshold))
    keep = torch.from_numpy(keep_np)
    if not ties:   # the order by decreasing score is unique
        return keep
    keep = keep.sort()[0]   # torchvision's final (unstable) sort decides the order of equal scores
    return keep[scores[keep].sort(descending=True)[1]]
