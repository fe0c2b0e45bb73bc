"""Box voting: each detection kept by NMS takes the score-weighted mean of the boxes that overlap it.

NMS keeps one box per object and throws the others away, although the discarded boxes of the same
object are estimates of its extent too. Box voting (Gidaris and Komodakis, "Object detection via a
multi-region & semantic segmentation-aware CNN model", 2015; Detectron's ``TEST.BBOX_VOTE``) replaces
each kept box by the mean of all candidate boxes of its class whose IoU with it is at least
``iou_threshold``, each weighted by its score before suppression; the kept box is one of its own voters.
Scores and the set of detections are unchanged: only the boxes move, which is what AP at high IoU
thresholds (AP75) rewards.
"""

from __future__ import annotations

from torch import Tensor

from detkit.ops.boxes import box_iou

__all__ = ["box_voting"]


def box_voting(kept_boxes: Tensor, kept_labels: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor,
               iou_threshold: float = 0.8) -> Tensor:
    """Refine kept detections by a score-weighted vote of the candidates of their class.

    Args:
        kept_boxes: Tensor[D, 4] (x1, y1, x2, y2), the detections NMS kept; kept_labels: int Tensor[D].
        boxes: Tensor[N, 4], the candidates before NMS (the kept boxes among them); scores: Tensor[N] >= 0,
            their scores before suppression; labels: int Tensor[N].
        iou_threshold: in [0, 1]: a candidate votes for a detection of its class when their IoU is at
            least this.
    Returns:
        Tensor[D, 4] in kept_boxes' dtype: the voted boxes. A detection with no voter of positive weight
        (e.g. every candidate scored 0) keeps its box.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"box voting iou_threshold must be in [0, 1], got {iou_threshold}")
    if kept_boxes.dim() != 2 or kept_boxes.shape[-1] != 4 or boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got kept {tuple(kept_boxes.shape)} and candidates "
                         f"{tuple(boxes.shape)}")
    if scores.shape != (boxes.shape[0],) or labels.shape != (boxes.shape[0],) \
            or kept_labels.shape != (kept_boxes.shape[0],):
        raise ValueError(f"scores and labels must have one entry per box: {boxes.shape[0]} candidates with "
                         f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)}, {kept_boxes.shape[0]} "
                         f"kept with labels {tuple(kept_labels.shape)}")
    if kept_boxes.shape[0] == 0 or boxes.shape[0] == 0:
        return kept_boxes.clone()
    # Float64 for the vote: a mean of up to thousands of boxes, and the IoU compared at the threshold.
    kept64, cand64 = kept_boxes.double(), boxes.double()
    votes = (box_iou(kept64, cand64) >= iou_threshold) & (kept_labels[:, None] == labels[None, :])  # (D, N)
    weights = votes * scores.double().clamp(min=0)[None, :]  # (D, N)
    total = weights.sum(dim=1, keepdim=True)  # (D, 1)
    voted = (weights @ cand64) / total.clamp(min=1e-300)  # (D, 4)
    return voted.where(total > 0, kept64).to(kept_boxes.dtype)
