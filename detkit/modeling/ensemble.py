"""A model ensemble at test time: trained detectors of the same classes, averaged per proposal.

Shape shorthand: B images, N members, R_i proposals of image i (all members' together), R = sum of R_i,
K classes without background.

Every member proposes on its own features (its RPN, on the base view); the proposals of all members are
pooled per image; every member's RoI head then classifies and regresses every pooled proposal in each of
its own test-time views (:meth:`detkit.modeling.roi_head.RoIHead.predict_views`), and the class
probabilities and the boxes are averaged over the members per proposal before the first member's
post-processing (score threshold, clip, min size, hard or soft NMS, top detections_per_img) runs once.
As with test-time views (detkit.modeling.tta), the members refine the same detections instead of adding
near-duplicates for NMS to suppress: YOLOv5's ``Ensemble`` concatenates its members' boxes before NMS,
and averaging the RoI head's outputs is how two-stage detectors are usually ensembled (the proposals of
one member are proposals for all: the RoI heads take any box).

Members may differ in backbone, head (single or cascade) and test-time views; they must share the classes
and the test-time resize, so that a box means the same pixels to each of them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from detkit.modeling.detector import Detector
from detkit.modeling.tta import average

__all__ = ["DetectorEnsemble"]


class DetectorEnsemble(nn.Module):
    """N trained :class:`Detector` averaged per proposal; evaluation and inference only.

    Its forward is the Detector's eval forward: B images (and optionally targets, orig_sizes) -> B detection
    dicts, or (detections, losses) with targets, the losses being each loss averaged over the members that
    have it (a cascade's per-stage losses come from the cascade members alone).

    Args:
        members: N >= 1 detectors with the same number of classes and the same ``test_resize``; the
            ensemble puts them in eval mode.
    """

    def __init__(self, members: Sequence[Detector]) -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one detector")
        first = members[0]
        num_classes = first.roi_head.predictor.num_classes
        for i, m in enumerate(members[1:], start=2):
            if m.roi_head.predictor.num_classes != num_classes:
                raise ValueError(f"ensemble member {i} has {m.roi_head.predictor.num_classes} classes, member 1 "
                                 f"has {num_classes}: every member must detect the same classes")
            if m.test_resize != first.test_resize:
                raise ValueError(f"ensemble member {i} resizes test images to {m.test_resize} (min, max side), "
                                 f"member 1 to {first.test_resize}: the members must share the test-time resize")
        self.members = nn.ModuleList(members)
        super().train(False)  # the members too: an ensemble only ever runs in eval

    def train(self, mode: bool = True) -> "DetectorEnsemble":
        if mode:
            raise ValueError("a DetectorEnsemble is for evaluation and inference; train its members one by one")
        return super().train(False)

    def forward(self, images: Union[Sequence[Tensor], Tensor], targets: Optional[Sequence[Dict[str, Tensor]]] = None,
                orig_sizes: Optional[Sequence[Tuple[int, int]]] = None):
        """
        Args:
            images: B x Tensor[3, H_i, W_i] float in [0, 1] (or a Tensor[B, 3, H, W]).
            targets: optional B dicts ("boxes" Tensor[M, 4], "labels" int64[M] in 1..K): adds the losses.
            orig_sizes: B x (h, w) to rescale the boxes to (e.g. the images before the resize).
        Returns:
            B x dict(boxes Tensor[D, 4], scores Tensor[D], labels int64[D] in 1..K), or (that, losses) with targets.
        """
        first: Detector = self.members[0]
        if targets is not None:
            first._check_targets(targets, len(images))
        if first.resizes:
            given = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
            orig_sizes = orig_sizes if orig_sizes is not None else given
            if targets is not None:
                targets = first._resized_targets(targets, given)
        member_views, member_proposals, member_losses = [], [], []
        image_sizes: List[Tuple[int, int]] = []
        for i, member in enumerate(self.members):
            views, sizes = member.view_batches(images)
            if i == 0:
                image_sizes = sizes
            elif sizes != image_sizes:  # the shared test_resize makes them equal; guard the geometry anyway
                raise ValueError(f"ensemble member {i + 1} sees the images at sizes {sizes}, member 1 at "
                                 f"{image_sizes}")
            own = views[0].features
            proposals, losses = member.rpn(list(own.values()), image_sizes, targets)
            if targets is not None:
                losses = {**losses, **member.roi_head.losses_of(own, proposals, targets, image_sizes)}
            member_views.append(views)
            member_proposals.append(proposals)
            member_losses.append(losses)
        pooled = [torch.cat([props[b] for props in member_proposals]) for b in range(len(image_sizes))]
        scores, boxes = self.predict(member_views, pooled, image_sizes)
        detections = first.roi_head.select(scores, boxes, [p.shape[0] for p in pooled], image_sizes)
        if orig_sizes is not None:
            detections = Detector.rescale(detections, image_sizes, orig_sizes)
        if targets is None:
            return detections
        keys = list(dict.fromkeys(k for losses in member_losses for k in losses))
        return detections, {k: average([losses[k] for losses in member_losses if k in losses]) for k in keys}

    def predict(self, member_views, proposals: Sequence[Tensor],
                image_sizes: Sequence[Tuple[int, int]]) -> Tuple[Tensor, Tensor]:
        """Every member's per-RoI predictions on the same proposals (B x Tensor[R_i, 4]), averaged ->
        (class probabilities Tensor[R, K], boxes Tensor[R, K or 1, 4]); ``member_views``: N lists of each
        member's views. A member that boxes once per RoI (class-agnostic) lends that box to every class
        when another member boxes per class."""
        predictions = [member.roi_head.predict_views(views, proposals, image_sizes)
                       for member, views in zip(self.members, member_views)]
        slots = max(boxes.shape[1] for _, boxes in predictions)
        scores = average([s for s, _ in predictions])
        boxes = average([b.expand(-1, slots, -1) for _, b in predictions])
        return scores, boxes
