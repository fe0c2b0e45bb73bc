"""The one order of candidates by score that detkit uses everywhere, and a top-k that follows it.

Shape shorthand: B leading (batch) dimensions, N candidates, K selected.

**The rule.** Candidates are ranked by decreasing score; equal scores by increasing index (their
position in the input). That is a stable sort by descending score, the order of
``torch.sort(scores, descending=True, stable=True)``; NaN ranks as +inf (above every finite score,
as ``torch.sort`` and ``torch.topk`` place it).

It is the order in which NMS visits and returns boxes (:mod:`detkit.ops.nms` and its Numba kernels,
torchvision's CPU ``nms`` and ONNX Runtime's ``NonMaxSuppression``), and the order of the RPN's
per-level top-k (:func:`topk_stable`), so the eager detector and its exported graph pick the same
candidates when scores tie. Scores tie more often than one would think: a sigmoid or softmax rounds
nearby logits of a confident model to the same float32, ReLU-dead features give every anchor of a
background region the same logit (the bias), and under bf16 autocast a level's top 1000 logits hold
only a few hundred distinct values.

``torch.topk`` does not follow the rule: on the CPU it returns equal values in an unspecified order
and, when equal values straddle the k-th place, an unspecified subset of them; ONNX's ``TopK``
follows it (its specification: "the element with the lower index will appear first").
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import Tensor

__all__ = ["topk_stable"]


def topk_stable(scores: Tensor, k: Union[int, Tensor]) -> Tuple[Tensor, Tensor]:
    """The ``k`` largest scores along the last dimension, in the rule's order.

    The same as ``torch.sort(scores, dim=-1, descending=True, stable=True)`` cut to its first k
    entries, at the cost of a ``torch.topk`` and a few passes over ``scores``. Traceable
    (``torch.jit.trace``) and exportable to ONNX, where it is ONNX's ``TopK``, whose specification
    is this rule.

    Args:
        scores: Tensor[..., N] float (any leading dimensions).
        k: 0 <= k <= N (an int, or a 0-d / 1-element int64 tensor while tracing).
    Returns:
        (values Tensor[..., K], indices int64[..., K]): by decreasing score, equal scores by
        increasing index.
    """
    if torch.onnx.is_in_onnx_export():
        return scores.topk(k, dim=-1)  # ONNX TopK: equal values by lower index first (its specification)
    if isinstance(k, int) and k == 0:
        return scores[..., :0], torch.zeros(scores.shape[:-1] + (0,), dtype=torch.int64, device=scores.device)
    key = torch.nan_to_num(scores, nan=float("inf"), posinf=float("inf"), neginf=float("-inf"))
    kth = key.topk(k, dim=-1).values[..., -1:]  # the k-th largest value of each row (unique as a value)
    above = key > kth
    tied = key == kth
    room = k - above.sum(dim=-1, keepdim=True)  # places left for the values equal to the k-th
    take = above | (tied & (tied.cumsum(dim=-1) <= room))  # exactly k per row: the first tied ones
    indices = take.nonzero()[:, -1].reshape(scores.shape[:-1] + (-1,))  # (..., K) increasing
    order = torch.sort(key.gather(-1, indices), dim=-1, descending=True, stable=True).indices
    indices = indices.gather(-1, order)
    return scores.gather(-1, indices), indices
