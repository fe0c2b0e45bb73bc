"""Argument checks shared by the torch-facing box kernels (nms, batched_nms, soft_nms)."""

from torch import Tensor

__all__ = ["check_boxes_scores"]


def check_boxes_scores(boxes: Tensor, scores: Tensor, *, same_dtype: bool) -> None:
    """Raise TypeError / ValueError, with the shapes or dtypes given, unless boxes is a float (N, 4)
    tensor and scores a float (N,) tensor on the same device (and, with ``same_dtype``, of its dtype)."""
    if not isinstance(boxes, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"boxes and scores must be torch Tensors, got {type(boxes).__name__} and "
                        f"{type(scores).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have shape (N,) = ({boxes.shape[0]},) to match boxes "
                         f"{tuple(boxes.shape)}, got {tuple(scores.shape)}")
    if same_dtype:
        if not boxes.is_floating_point() or boxes.dtype != scores.dtype:
            raise ValueError(f"boxes and scores must share one floating dtype, got {boxes.dtype} and {scores.dtype}")
        if boxes.device != scores.device:
            raise ValueError(f"boxes and scores must be on one device, got {boxes.device} and {scores.device}")
    elif not boxes.is_floating_point() or not scores.is_floating_point():
        raise ValueError(f"boxes and scores must be floating tensors, got {boxes.dtype} and {scores.dtype}")
