"""Cascade R-CNN's RoI head (Cai and Vasconcelos, "Cascade R-CNN: Delving into High Quality Object
Detection", CVPR 2018): T stages, each a full :class:`detkit.modeling.roi_head.RoIHead` of its own,
trained at a rising IoU threshold on the boxes the stage before it refined.

Shape shorthand: B images, C channels, S pooled side, R RoIs (all images), R_i RoIs of image i,
M ground-truth boxes, K classes without background, T stages, V test-time views (1 without
test-time augmentation; detkit.modeling.tta).

Stage t (1-based) has its own box head (the configured FCHead or ConvFCHead), its own predictor with
class-agnostic box regression (one (dx, dy, dw, dh) per RoI, as the paper, Detectron2's
CascadeROIHeads and MMDetection's cascade configs: the regression serves as the next stage's
resampling, which must not depend on a class guess), its own MaxIoUAssigner at
``iou_thresholds[t]`` (foreground at or above, background below, no low-quality matches) and its own
BoxCoder, whose weights grow with the stage because the refined boxes' offsets shrink: t x the
single head's (10, 10, 5, 5), i.e. (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15) as the paper and
Detectron2. The RoIAlign is shared (it has no weights).

Training: stage 1 takes the RPN's proposals; stage t + 1 takes stage t's sampled RoIs moved by stage
t's regression, clipped to the image and detached (no gradient flows between stages, as Detectron2).
Every stage appends the ground truth to its input boxes, assigns them at its threshold and samples
them (batch_size_per_image at positive_fraction) exactly as the single head does (MMDetection's
scheme; Detectron2 samples once, in stage 1). Losses: ``loss_roi_cls_s{t}`` and ``loss_roi_reg_s{t}``
(the single head's loss_roi_cls / loss_roi_reg of that stage), each already multiplied by the stage's
loss weight, so that the total loss is the plain sum of the dict as for every detector; the default
weights are 1, 0.5, 0.25 (halved per stage: Cai's original implementation and MMDetection;
Detectron2 instead weights the stages equally and scales the gradient reaching the features by 1/T).

Inference: the proposals go through the regressions of stages 1..T-1 (clipped after each); on the
last stage's input boxes the classifiers of all T stages are applied and their softmax probabilities
averaged (the paper's ensemble "on the 3rd stage proposals"; Detectron2 and MMDetection average each
stage's scores on that stage's own input boxes instead), and the last stage's regression gives the
detection boxes; then the single head's post-processing (score threshold, clip, min size, per-class
hard or soft NMS, top detections_per_img) runs unchanged (:meth:`RoIHead.select`). With test-time
augmentation (flip and/or scales) every stage sees every view of each box: the refined boxes, the
probabilities and the final boxes are averaged over the views per RoI, as the single head averages them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.modeling.roi_head import BoxPredictor, MultiLevelRoIAlign, RoIHead
from detkit.modeling.sampler import SamplingRNG
from detkit.modeling.tta import ViewBatch, average, hflip_views
from detkit.ops.boxes import clip_boxes

__all__ = ["CascadeRoIHead", "stage_box_weights", "default_stage_loss_weights"]


def stage_box_weights(base: Sequence[float], stage: int) -> Tuple[float, float, float, float]:
    """BoxCoder weights of 1-based ``stage``: ``stage`` x the single head's (10, 10, 5, 5 -> 20, 20, 10, 10 ...)."""
    return tuple(float(w) * stage for w in base)  # type: ignore[return-value]


def default_stage_loss_weights(num_stages: int) -> List[float]:
    """1, 0.5, 0.25, ...: each stage's losses weigh half the stage before's."""
    return [0.5 ** t for t in range(num_stages)]


class CascadeRoIHead(nn.Module):
    """T RoIHead stages with rising IoU thresholds; RoIHead's contract (forward, losses_of,
    postprocess_views, postprocess_hflip, rng, predictor).

    Args:
        stages: T RoIHead modules, stage 1 first, each with a class-agnostic BoxPredictor, its own
            box head, assigner (at its threshold) and BoxCoder; their post-processing settings are read
            from the last stage. Stage 1's sampling generator is the head's (``rng``, checkpointed);
            the others only lend their seed to the per-image sampling seeds.
        stage_loss_weights: T positive weights of the stages' losses.
    """

    def __init__(self, *, stages: Sequence[RoIHead], stage_loss_weights: Sequence[float]) -> None:
        super().__init__()
        if len(stages) < 2:
            raise ValueError(f"a cascade needs at least 2 stages, got {len(stages)}")
        if len(stage_loss_weights) != len(stages):
            raise ValueError(f"got {len(stage_loss_weights)} stage loss weights for {len(stages)} stages")
        for t, stage in enumerate(stages):
            if not stage.predictor.class_agnostic:
                raise ValueError(f"cascade stage {t + 1} must regress class-agnostically "
                                 f"(BoxPredictor(class_agnostic=True))")
        self.stages = nn.ModuleList(stages)
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]
        last = stages[-1]  # the post-processing settings, as RoIHead attributes (export reads them)
        self.score_thresh, self.nms_thresh, self.nms_method = last.score_thresh, last.nms_thresh, last.nms_method
        self.detections_per_img, self.min_size = last.detections_per_img, last.min_size

    # ------------------------------------------------------------------ RoIHead's interface
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def rng(self) -> SamplingRNG:
        """The sampling stream of the whole cascade (stage 1's), saved in checkpoints by the Detector."""
        return self.stages[0].rng

    @property
    def predictor(self) -> BoxPredictor:
        """The last stage's predictor (num_classes, class_agnostic for the Detector and weight transfer)."""
        return self.stages[-1].predictor

    @property
    def roi_pool(self) -> MultiLevelRoIAlign:
        return self.stages[0].roi_pool

    def forward(self, features: Dict[str, Tensor], proposals: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                targets: Optional[Sequence[Dict[str, Tensor]]] = None
                ) -> Tuple[Optional[List[Dict[str, Tensor]]], Dict[str, Tensor]]:
        """
        Args:
            features: name -> Tensor[B, C, H, W]; proposals: B x Tensor[R_i, 4]; image_sizes: B x (h, w).
            targets: B dicts with "boxes" Tensor[M, 4], "labels" int64[M] in 1..K, optional "ignore_boxes".
        Returns:
            training: (None, {"loss_roi_cls_s1", "loss_roi_reg_s1", ..., "loss_roi_reg_s{T}"}).
            eval: (B x dict(boxes Tensor[D, 4], scores Tensor[D], labels int64[D]), losses if targets else {}).
        """
        losses: Dict[str, Tensor] = {}
        if targets is not None:
            losses = self.losses_of(features, proposals, targets, image_sizes=image_sizes)
        elif self.training:
            raise ValueError("CascadeRoIHead needs targets in training mode")
        if self.training:
            return None, losses
        return self._detect([ViewBatch(features, image_sizes, image_sizes)], proposals, image_sizes), losses

    def losses_of(self, features: Dict[str, Tensor], proposals: Sequence[Tensor], targets: Sequence[Dict[str, Tensor]],
                  image_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> Dict[str, Tensor]:
        """Every stage's two losses, weighted (a fresh sampling generator in eval, so that validation
        losses repeat). ``image_sizes`` (B x (h, w)) clip the refined boxes between stages; without
        them the boxes are not clipped."""
        device = proposals[0].device if len(proposals) else features[self.roi_pool.featmap_names[0]].device
        generator = self.rng.on(device) if self.training else self.rng.fresh(device)
        losses: Dict[str, Tensor] = {}
        boxes = list(proposals)  # B x (R_i, 4): the current stage's input boxes
        for t, (stage, weight) in enumerate(zip(self.stages, self.stage_loss_weights)):
            rois, labels, pos_rows, reg_targets = stage.sample_targets(boxes, targets, generator)
            logits, deltas = stage.predictor(stage.box_head(stage.roi_pool(features, rois)))
            for key, value in stage.loss(logits, deltas, labels, pos_rows, reg_targets, rois=rois).items():
                losses[f"{key}_s{t + 1}"] = value * weight
            if t + 1 < len(self.stages):
                boxes = self._refine(stage, deltas.detach(), rois, image_sizes)
        return losses

    def postprocess_views(self, views: Sequence[ViewBatch], proposals: Sequence[Tensor],
                          image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """RoIHead.postprocess_views's contract: every stage averages its V views per RoI."""
        return self._detect(views, proposals, image_sizes)

    def postprocess_hflip(self, features: Dict[str, Tensor], proposals: Sequence[Tensor],
                          image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """RoIHead.postprocess_hflip's contract: ``features`` name -> Tensor[2B, C, H, W] (the B images,
        then their mirror images); every stage averages its two views per RoI."""
        return self._detect(hflip_views(features, image_sizes), proposals, image_sizes)

    # ------------------------------------------------------------------ stages
    @staticmethod
    def _refine(stage: RoIHead, deltas: Tensor, boxes: Sequence[Tensor],
                image_sizes: Optional[Sequence[Tuple[int, int]]]) -> List[Tensor]:
        """deltas: Tensor[R, 4] class-agnostic of boxes B x Tensor[R_i, 4] -> B x Tensor[R_i, 4] decoded
        (clipped to ``image_sizes`` when given), without gradient."""
        with torch.no_grad():
            decoded = stage.box_coder.decode(deltas, torch.cat(list(boxes)))  # (R, 4)
            out = list(decoded.split([b.shape[0] for b in boxes]))
            if image_sizes is not None:
                out = [clip_boxes(b, size) for b, size in zip(out, image_sizes)]
        return [b.detach() for b in out]

    @staticmethod
    def _run_views(stage: RoIHead, pooled: Tensor, view_boxes: Sequence[Sequence[Tensor]],
                   views: Sequence[ViewBatch]) -> Tuple[Tensor, Tensor]:
        """One stage on pooled Tensor[V*R, C, S, S] (the boxes in each view, view after view) ->
        (class probabilities Tensor[R, K+1], decoded boxes Tensor[R, 4] in base-view pixels), both
        averaged over the views; each view's boxes are mapped back to the base view first."""
        logits, deltas = stage.predictor(stage.box_head(pooled))  # (V*R, K+1), (V*R, 4)
        n = logits.shape[0] // len(views)
        probs = average(F.softmax(logits, dim=-1).split(n))  # (R, K+1)
        counts = [b.shape[0] for b in view_boxes[0]]
        decoded = []
        for view, boxes, dl in zip(views, view_boxes, deltas.split(n)):
            in_view = stage.box_coder.decode(dl, torch.cat(list(boxes)))  # (R, 4)
            decoded.append(in_view if view.identity else torch.cat(view.from_view(in_view.split(counts))))
        return probs, average(decoded)

    def _pool(self, views: Sequence[ViewBatch], boxes: Sequence[Tensor]) -> Tuple[Tensor, List[List[Tensor]]]:
        """Pooled Tensor[V*R, C, S, S] of the boxes (B x Tensor[R_i, 4], base-view pixels) in every view,
        view after view, and the boxes in each view's pixels (V x B x Tensor[R_i, 4])."""
        view_boxes = [view.to_view(boxes) for view in views]
        pooled = [self.roi_pool(view.features, vb) for view, vb in zip(views, view_boxes)]
        return (torch.cat(pooled) if len(pooled) > 1 else pooled[0]), view_boxes

    def predict_views(self, views: Sequence[ViewBatch], proposals: Sequence[Tensor],
                      image_sizes: Sequence[Tuple[int, int]]) -> Tuple[Tensor, Tensor]:
        """RoIHead.predict_views's contract: refine through stages 1..T-1, average all T classifiers on
        the last stage's input boxes, box by the last stage's regression (every stage averaging its V
        views per RoI) -> (class probabilities Tensor[R, K], background dropped; boxes Tensor[R, 1, 4])."""
        boxes = list(proposals)  # B x (R_i, 4)
        counts = [b.shape[0] for b in boxes]
        for stage in self.stages[:-1]:
            pooled, view_boxes = self._pool(views, boxes)
            _, refined = self._run_views(stage, pooled, view_boxes, views)  # (R, 4)
            boxes = [clip_boxes(b, size).detach() for b, size in zip(refined.split(counts), image_sizes)]
        pooled, view_boxes = self._pool(views, boxes)
        probs, final = None, None
        for stage in self.stages:
            p, final = self._run_views(stage, pooled, view_boxes, views)  # (R, K+1), (R, 4)
            probs = p if probs is None else probs + p
        return (probs / len(self.stages))[:, 1:], final[:, None]  # (R, K+1) -> (R, K); (R, 1, 4)

    def _detect(self, views: Sequence[ViewBatch], proposals: Sequence[Tensor],
                image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """:meth:`predict_views`, post-processed -> B x dict(boxes Tensor[D, 4], scores Tensor[D], labels
        int64[D] in 1..K)."""
        scores, boxes = self.predict_views(views, proposals, image_sizes)
        return self.select(scores, boxes, [p.shape[0] for p in proposals], image_sizes)

    def select(self, scores: Tensor, boxes: Tensor, counts: Sequence[int],
               image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """RoIHead.select's contract, with the last stage's post-processing settings."""
        return self.stages[-1].select(scores, boxes, counts, image_sizes)
