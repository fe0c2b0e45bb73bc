"""Non-maximum suppression on tensors: ``nms`` and ``batched_nms`` with torchvision's signatures.

Shape shorthand: N boxes, K kept boxes.

Both give exactly torchvision's CPU answers:

* Order: the one rule of :mod:`detkit.ops.score_order`: boxes are visited (and kept indices
  returned) by decreasing score, **equal scores by increasing index**, i.e. in the order of
  ``torch.sort(scores, stable=True, descending=True)``, the very call torchvision's CPU kernel makes.
  ONNX Runtime's ``NonMaxSuppression`` visits equal scores in the same order, so the exported
  detector (:mod:`detkit.deploy.export_graph`) suppresses as the eager one does.
* Suppression: box j is dropped when an already kept box i has ``IoU(i, j) > iou_threshold``, with
  the IoU computed in the input dtype as torchvision's C++ kernel does; the Numba kernels that do
  it, and how they prune the search, are in :mod:`detkit.ops.nms_kernels`.
* float16 / bfloat16: torchvision's CPU kernel rejects them; detkit computes on the exactly upcast
  float32 values, i.e. the result is ``torchvision.ops.nms(boxes.float(), scores.float(), t)``.
* CUDA tensors are handed to torchvision's CUDA kernel unchanged (no host round trip, so their
  values are not checked for NaN / inf; its order of equal scores is its unstable sort's).

``batched_nms`` groups boxes (classes, or pyramid levels) in one of three ways (``mode``):
``"auto"`` is torchvision's choice (the coordinate-offset trick up to 4000 coordinates, NMS per
group above: identical to ``torchvision.ops.batched_nms``, whose own order of equal scores above
4000 coordinates is its unstable sort's, where detkit's keeps the rule); ``"offsets"`` and
``"per_group"`` use one of the two at every size, so that a caller whose other implementation
cannot switch on the input's size (an exported graph) computes the same thing. The offsets of
``"offsets"`` are :func:`offset_by_group`'s, a function of torch operators that an exported graph
calls as well.

The wrappers check the arguments, convert CPU tensors to NumPy once, and convert the kept
indices back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from detkit.ops.box_args import check_boxes_scores
from detkit.ops.nms_kernels import batched_nms_kernel, nms_kernel

__all__ = ["nms", "batched_nms", "offset_by_group", "BATCHED_NMS_MODES"]

# torchvision.ops.batched_nms switches from the coordinate trick to per-class NMS above this
# number of box coordinates on the CPU; the two can differ (offsets change IoU rounding), so
# detkit follows the same switch to return identical results.
_TORCHVISION_VANILLA_NUMEL = 4000
BATCHED_NMS_MODES = ("auto", "offsets", "per_group")


def _to_numpy(t: Tensor, name: str) -> np.ndarray:
    """CPU tensor -> contiguous float32/float64 array; raises ValueError on NaN or inf."""
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    arr = t.detach().contiguous().numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _score_order(scores: Tensor) -> np.ndarray:
    """The visiting order (detkit.ops.score_order's rule, torchvision's CPU order): a stable descending
    sort, equal scores by increasing index."""
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


def offset_by_group(boxes: Tensor, idxs: Tensor) -> Tensor:
    """The boxes moved so that boxes of different groups never overlap: torchvision's coordinate-offset
    trick, ``boxes + idxs * (max coordinate + 1)``, for any box coordinates and in torch operators only
    (traceable, exportable to ONNX, defined for no boxes).

    The offset unit is ``max(max coordinate, 0) - min(min coordinate, 0) + 1``: for boxes with
    non-negative coordinates (a detector's boxes, clipped to the image) exactly torchvision's
    ``max coordinate + 1``, computed in the boxes' dtype as torchvision does.

    Args:
        boxes: Tensor[N, 4]; idxs: int64[N] group of each box.
    Returns:
        Tensor[N, 4] in the boxes' dtype.
    """
    flat = torch.cat((boxes.reshape(-1), boxes.new_zeros(1)))  # the zero: a unit for no boxes, and >= 0 spans
    unit = (flat.max() - flat.min()) + 1
    return boxes + (idxs.to(boxes.dtype) * unit)[:, None]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, *, mode: str = "auto") -> Tensor:
    """NMS applied independently per category, identical to ``torchvision.ops.batched_nms`` (CPU).

    Args:
        boxes: Tensor[N, 4]; scores: Tensor[N]; idxs: Tensor[N] integer category of each box.
        iou_threshold: as in :func:`nms`.
        mode: how the categories are kept apart (see the module docstring). ``"auto"``: as
            torchvision, the coordinate-offset trick when ``boxes.numel() <= 4000`` and NMS per category
            above (the offsets can change the IoU rounding, so detkit takes the same branch);
            ``"offsets"``: ``nms(offset_by_group(boxes, idxs), scores)`` at every size;
            ``"per_group"``: NMS per category at every size (one Numba call, each category in its own
            tile of one grid). On CUDA, "auto" is torchvision's batched_nms.
    Returns:
        Tensor[K] int64: kept indices by decreasing score, equal scores by increasing index.
    """
    check_boxes_scores(boxes, scores, same_dtype=True)
    if not isinstance(idxs, Tensor) or idxs.shape != scores.shape or idxs.is_floating_point() or idxs.is_complex():
        raise ValueError(f"idxs must be an integer tensor of shape ({boxes.shape[0]},), got "
                         f"{getattr(idxs, 'dtype', type(idxs).__name__)} of shape {tuple(getattr(idxs, 'shape', ()))}")
    if mode not in BATCHED_NMS_MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, BATCHED_NMS_MODES))}, got {mode!r}")
    if boxes.device.type != "cpu":
        return _batched_nms_cuda(boxes, scores, idxs, iou_threshold, mode)
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64)
    if boxes.dtype in (torch.float16, torch.bfloat16):
        boxes, scores = boxes.float(), scores.float()
    if mode == "offsets":
        _to_numpy(boxes, "boxes")
        return nms(offset_by_group(boxes, idxs), scores, iou_threshold)
    if mode == "auto" and boxes.numel() <= _TORCHVISION_VANILLA_NUMEL:
        _to_numpy(boxes, "boxes")
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    boxes_np = _to_numpy(boxes, "boxes")
    _to_numpy(scores, "scores")
    classes = idxs.detach().to(torch.int64).contiguous().numpy()
    return torch.from_numpy(batched_nms_kernel(boxes_np, _score_order(scores), classes, float(iou_threshold)))


def _batched_nms_cuda(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, mode: str) -> Tensor:
    """batched_nms on a GPU with torchvision's kernels (their order of equal scores is theirs)."""
    import torchvision

    if mode == "auto":
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    if mode == "offsets":
        return torchvision.ops.nms(offset_by_group(boxes, idxs), scores, iou_threshold)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(idxs):
        rows = torch.where(idxs == group)[0]
        keep[rows[torchvision.ops.nms(boxes[rows], scores[rows], iou_threshold)]] = True
    kept = torch.where(keep)[0]
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
