"""Second stage: RoIAlign over the proposals, (convolutions and) fully connected layers, class scores and
box deltas.

Shape shorthand: B images, C channels, S pooled side (7), R RoIs (all images), R_i RoIs of image
i, M ground-truth boxes, K classes without background (label 0 = background), P positive RoIs,
D detections of one image.

Training follows torchvision's RoIHeads: the ground-truth boxes are appended to each image's
proposals; MaxIoUAssigner (0.5 / 0.5, no low-quality matches, ignore regions honoured) ->
BalancedSampler (512 at 0.25) -> BoxCoder (10, 10, 5, 5) on the sampled positives; losses:
cross-entropy over the sampled RoIs and smooth-L1 (beta 1/9) over the positives' deltas of their
ground-truth class (or, with ``box_loss="giou"``, 1 - GIoU of those deltas decoded into boxes), both
divided by the number of sampled RoIs of the batch (torchvision's ``fastrcnn_loss`` divides by
``labels.numel()``). Post-processing as torchvision's
``postprocess_detections``: softmax, per-class decode, clip, score > score_thresh, drop boxes
under min_size, per-class NMS (detkit.ops.batched_nms), top detections_per_img. The score
threshold is applied before decoding (only the surviving class boxes are decoded): same output.
With ``nms_method`` "linear" or "gaussian" the per-class NMS is soft-NMS
(detkit.ops.batched_soft_nms): overlapping detections keep their boxes with decayed scores, which
helps where objects of one class crowd and overlap; the detections' scores are the decayed ones.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops.misc import Conv2dNormActivation
from torchvision.ops.poolers import LevelMapper

from detkit.config import BOX_LOSSES, GROUP_NORM_GROUPS
from detkit.modeling.geometry_dtype import to_geometry
from detkit.modeling.sampler import SamplingRNG
from detkit.modeling.tta import ViewBatch, average, hflip_views, mirror_boxes
from detkit.ops.box_losses import generalized_box_iou_loss
from detkit.ops.box_voting import box_voting
from detkit.ops.boxes import clip_boxes, remove_small_boxes
from detkit.ops.nms import batched_nms
from detkit.ops.roi_align import multilevel_roi_align, torchvision_multilevel_roi_align
from detkit.ops.soft_nms import batched_soft_nms

if TYPE_CHECKING:
    from detkit.modeling.assigner import MaxIoUAssigner
    from detkit.modeling.codec import BoxCoder
    from detkit.modeling.sampler import BalancedSampler

__all__ = ["MultiLevelRoIAlign", "FCHead", "ConvFCHead", "BoxPredictor", "RoIHead", "mirror_boxes", "BOX_LOSSES"]

#: The weight of each of the box regression losses (config.BOX_LOSSES) when box_loss_weight is not given.
DEFAULT_BOX_LOSS_WEIGHTS = {"smooth_l1": 1.0, "giou": 10.0}


class MultiLevelRoIAlign(nn.Module):
    """torchvision's MultiScaleRoIAlign with known strides, a configurable ``aligned`` flag, and
    detkit.ops.multilevel_roi_align (torchvision's sampling, every level in one Numba-parallel pass on
    the CPU) instead of one torchvision kernel per level.

    An RoI of side sqrt(w*h) goes to level ``floor(4 + log2(sqrt(w*h) / 224) + 1e-6)`` clamped to the
    pooled levels (torchvision's LevelMapper, FPN paper eq. 1); with one map every RoI uses it.

    Args:
        featmap_names: names of the maps to pool from, finest first (FPN: p2..p5, as torchvision).
        strides: their strides (powers of two).
        output_size: S. sampling_ratio: RoIAlign samples per bin side (0 = adaptive).
        aligned: RoIAlign's half-pixel correction (torchvision's MultiScaleRoIAlign uses False).
        kernel: "detkit" (the Numba kernel on the CPU; its sums run in another order than torchvision's,
            so results agree to float32 rounding) or "torchvision" (torchvision's kernel per level:
            bit-identical to torchvision's detectors, for models that reproduce them).
    """

    def __init__(self, *, featmap_names: Sequence[str], strides: Sequence[int], output_size: int = 7,
                 sampling_ratio: int = 2, aligned: bool = False, kernel: str = "detkit") -> None:
        super().__init__()
        if kernel not in ("detkit", "torchvision"):
            raise ValueError(f"RoIAlign kernel must be 'detkit' or 'torchvision', got {kernel!r}")
        self.kernel = kernel
        self.featmap_names = list(featmap_names)
        self.scales = [1.0 / s for s in strides]
        self.output_size = (int(output_size), int(output_size))
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        k_min, k_max = int(round(math.log2(strides[0]))), int(round(math.log2(strides[-1])))
        self.mapper = LevelMapper(k_min, k_max) if len(strides) > 1 else None

    def forward(self, features: Dict[str, Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """features: name -> Tensor[B, C, H, W]; boxes: B x Tensor[R_i, 4] in input pixels -> Tensor[R, C, S, S]."""
        maps = [features[name] for name in self.featmap_names]
        batch_idx = torch.cat([torch.full((b.shape[0], 1), i, dtype=b.dtype, device=b.device)
                               for i, b in enumerate(boxes)])
        rois = torch.cat((batch_idx, torch.cat(list(boxes))), dim=1)  # (R, 1) + (R, 4) -> (R, 5)
        if self.mapper is None:
            levels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
        else:
            levels = self.mapper(list(boxes))  # (R,) int64 in [0, len(maps))
        align = multilevel_roi_align if self.kernel == "detkit" else torchvision_multilevel_roi_align
        return align(maps, rois, levels, self.output_size, self.scales, self.sampling_ratio, self.aligned)


class FCHead(nn.Module):
    """Flatten, then ``num_fc`` Linear (+ norm) + ReLU layers of ``fc_dim`` (torchvision's TwoMLPHead
    for 2 layers and no norm).

    ``norm``: ``"none"`` (torchvision), ``"ln"`` (LayerNorm over the ``fc_dim`` features of each RoI)
    or ``"gn"`` (GroupNorm, 32 groups of features). With a norm the Linear layers drop their bias
    (the norm's shift replaces it). Why per-RoI norms and not BatchNorm1d: training normalises over
    the sampled RoIs (25% positives) while inference sees 1000 mostly-background proposals per image,
    so batch statistics would differ between the two; a per-RoI norm has no statistics to carry over
    and behaves the same in both (the head-normalisation remedy of He et al., "Rethinking ImageNet
    Pre-training", for detectors trained from scratch).

    Init as Detectron2's FastRCNNConvFCHead: Kaiming-uniform (a=1) weights, zero biases; norm
    weight 1, bias 0.
    """

    NORMS = ("none", "ln", "gn")
    GN_GROUPS = GROUP_NORM_GROUPS

    def __init__(self, *, in_channels: int, pool_size: int, num_fc: int = 2, fc_dim: int = 1024,
                 norm: str = "none") -> None:
        super().__init__()
        if norm not in self.NORMS:
            raise ValueError(f"FCHead norm {norm!r}: expected one of {', '.join(self.NORMS)}")
        if norm == "gn" and fc_dim % self.GN_GROUPS:
            raise ValueError(f"FCHead norm 'gn' needs fc_dim divisible by {self.GN_GROUPS}, got {fc_dim}")
        dims = [in_channels * pool_size * pool_size] + [fc_dim] * num_fc
        use_bias = norm == "none"
        self.fcs = nn.ModuleList(nn.Linear(a, b, bias=use_bias) for a, b in zip(dims[:-1], dims[1:]))
        for fc in self.fcs:
            nn.init.kaiming_uniform_(fc.weight, a=1)
            if fc.bias is not None:
                nn.init.constant_(fc.bias, 0.0)
        if norm == "ln":
            self.norms = nn.ModuleList(nn.LayerNorm(fc_dim) for _ in range(num_fc))
        elif norm == "gn":
            self.norms = nn.ModuleList(nn.GroupNorm(self.GN_GROUPS, fc_dim) for _ in range(num_fc))
        else:
            self.norms = None
        self.norm = norm
        self.out_features = fc_dim

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> Tensor[R, fc_dim]."""
        x = x.flatten(1)  # (R, C, S, S) -> (R, C*S*S)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = F.relu(x, inplace=True)
        return x


class ConvFCHead(FCHead):
    """``num_conv`` x (3x3 conv, padding 1 -> norm -> ReLU) of ``conv_dim`` channels on the pooled
    RoIs, then FCHead's flatten and ``num_fc`` FC layers (torchvision's FastRCNNConvFCHead;
    ``fasterrcnn_resnet50_fpn_v2``: 4 convs of 256 with BatchNorm2d, then one FC of 1024).

    ``self.convs[i]`` is torchvision's ``Conv2dNormActivation``, so the keys are ``convs.{i}.0.weight``
    (the conv; ``convs.{i}.0.bias`` only with ``conv_norm="none"``) and ``convs.{i}.1.*`` (the norm):
    torchvision v2's ``box_head.{i}.0/1.*``. The FC layers and their ``norm`` are FCHead's
    (``fcs.{j}``; torchvision's ``box_head.{num_conv + 1}``).

    ``conv_norm``: ``"bn"`` (BatchNorm2d, as torchvision v2), ``"gn"`` (GroupNorm, 32 groups) or
    ``"none"``. BatchNorm2d here normalises over the RoIs of the batch (and their S x S positions),
    with the caveat FCHead gives for BatchNorm1d: its statistics are learnt on the sampled RoIs (25%
    positives) and applied at inference to mostly-background proposals. ``"gn"`` is the per-RoI
    alternative, with no statistics to carry over. BatchNorm folds into the convs for inference
    (detkit.modeling.fold_bn), GroupNorm does not.

    Init as torchvision's FastRCNNConvFCHead: convs Kaiming-normal (fan-out, ReLU), zero biases;
    norm weight 1, bias 0. The FC layers are initialised as FCHead's.
    """

    CONV_NORMS = ("none", "bn", "gn")

    def __init__(self, *, in_channels: int, pool_size: int, num_conv: int, conv_dim: int = 256,
                 conv_norm: str = "bn", num_fc: int = 1, fc_dim: int = 1024, norm: str = "none") -> None:
        if num_conv < 1:
            raise ValueError(f"ConvFCHead needs num_conv >= 1, got {num_conv} (use FCHead for no convs)")
        if conv_norm not in self.CONV_NORMS:
            raise ValueError(f"ConvFCHead conv_norm {conv_norm!r}: expected one of {', '.join(self.CONV_NORMS)}")
        if conv_norm == "gn" and conv_dim % self.GN_GROUPS:
            raise ValueError(f"ConvFCHead conv_norm 'gn' needs conv_dim divisible by {self.GN_GROUPS}, got {conv_dim}")
        super().__init__(in_channels=conv_dim, pool_size=pool_size, num_fc=num_fc, fc_dim=fc_dim, norm=norm)
        norm_layer = {"none": None, "bn": nn.BatchNorm2d,
                      "gn": lambda channels: nn.GroupNorm(self.GN_GROUPS, channels)}[conv_norm]
        # Conv2dNormActivation: Sequential(conv, norm, ReLU), the conv biased only without a norm.
        self.convs = nn.ModuleList(
            Conv2dNormActivation(in_channels if i == 0 else conv_dim, conv_dim, kernel_size=3, norm_layer=norm_layer,
                                 activation_layer=nn.ReLU)
            for i in range(num_conv))
        for block in self.convs:
            conv = block[0]
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        self.conv_norm = conv_norm

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> Tensor[R, fc_dim]."""
        for block in self.convs:
            x = block(x)  # (R, C or conv_dim, S, S) -> (R, conv_dim, S, S)
        return super().forward(x)


class BoxPredictor(nn.Module):
    """Class logits (K + 1, background first) and box deltas (4K class-specific, or 4 class-agnostic).

    Init as Detectron2: logits weights normal(std=0.01), deltas normal(std=0.001), zero biases.
    """

    def __init__(self, *, in_features: int, num_classes: int, class_agnostic: bool = False) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.class_agnostic = bool(class_agnostic)
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 if class_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0.0)
        nn.init.constant_(self.bbox_pred.bias, 0.0)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """x: Tensor[R, F] -> (Tensor[R, K+1] logits, Tensor[R, 4K] or Tensor[R, 4] deltas), in float32
        under autocast: the losses, softmax and box decoding are not done in reduced precision."""
        return to_geometry(self.cls_score(x)), to_geometry(self.bbox_pred(x))


class RoIHead(nn.Module):
    """RoI pooling + FCHead (or ConvFCHead) + BoxPredictor, with training targets, losses and post-processing.

    Args:
        roi_pool: MultiLevelRoIAlign. box_head: FCHead or ConvFCHead. predictor: BoxPredictor.
        assigner: MaxIoUAssigner (0.5 / 0.5, allow_low_quality_matches=False as torchvision).
        sampler: BalancedSampler (512, 0.25). box_coder: BoxCoder (10, 10, 5, 5).
        score_thresh, nms_thresh, detections_per_img, min_size: post-processing (torchvision's).
        nms_method: "hard" (torchvision's NMS at nms_thresh), or soft-NMS: "linear" (decay by
            1 - IoU above nms_thresh) or "gaussian" (decay by exp(-IoU^2 / soft_nms_sigma)); decayed
            scores under score_thresh are dropped.
        smooth_l1_beta: beta of the regression loss. seed: seed of the sampling generator.
        box_loss: the regression loss of the positives: "smooth_l1" on their encoded deltas (torchvision),
            or "giou": 1 - GIoU of their decoded boxes against their ground truth (MMDetection's
            ``reg_decoded_bbox`` with GIoULoss), which optimises the overlap that AP75 measures.
        box_loss_weight: multiplies the regression loss; None: 1 for smooth_l1, 10 for giou (MMDetection's
            weight, which brings 1 - GIoU, a fraction per box, to the scale of the deltas' smooth L1).
        box_voting: None, or an IoU: each detection's box becomes the score-weighted mean of its class's
            candidate boxes overlapping it at least that much (Detectron's 0.8; detkit.ops.box_voting).
    """

    def __init__(self, *, roi_pool: MultiLevelRoIAlign, box_head: FCHead, predictor: BoxPredictor,
                 assigner: "MaxIoUAssigner", sampler: "BalancedSampler", box_coder: "BoxCoder",
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, nms_method: str = "hard",
                 soft_nms_sigma: float = 0.5, detections_per_img: int = 100, min_size: float = 1e-2,
                 smooth_l1_beta: float = 1.0 / 9, seed: int = 1, kernels: str = "detkit",
                 box_voting: Optional[float] = None, box_loss: str = "smooth_l1",
                 box_loss_weight: Optional[float] = None) -> None:
        super().__init__()
        if kernels not in ("detkit", "torchvision"):
            raise ValueError(f"kernels must be 'detkit' or 'torchvision', got {kernels!r}")
        self.kernels = kernels
        self.roi_pool = roi_pool
        self.box_head = box_head
        self.predictor = predictor
        self.assigner = assigner
        self.sampler = sampler
        self.box_coder = box_coder
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        if nms_method not in ("hard", "linear", "gaussian"):
            raise ValueError(f"nms_method must be 'hard', 'linear' or 'gaussian', got {nms_method!r}")
        self.nms_method = nms_method
        self.soft_nms_sigma = float(soft_nms_sigma)
        if box_voting is not None and not 0.0 <= box_voting <= 1.0:
            raise ValueError(f"box_voting must be an IoU in [0, 1] or None, got {box_voting}")
        self.box_voting = None if box_voting is None else float(box_voting)
        self.detections_per_img = int(detections_per_img)
        self.min_size = float(min_size)
        self.smooth_l1_beta = float(smooth_l1_beta)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {box_loss!r}")
        self.box_loss = box_loss
        if box_loss_weight is not None and not box_loss_weight > 0:
            raise ValueError(f"box_loss_weight must be > 0 or None (the loss's default), got {box_loss_weight}")
        self.box_loss_weight = DEFAULT_BOX_LOSS_WEIGHTS[box_loss] if box_loss_weight is None else float(box_loss_weight)
        self.rng = SamplingRNG(seed, stream=1)

    def forward(self, features: Dict[str, Tensor], proposals: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                targets: Optional[Sequence[Dict[str, Tensor]]] = None
                ) -> Tuple[Optional[List[Dict[str, Tensor]]], Dict[str, Tensor]]:
        """
        Args:
            features: name -> Tensor[B, C, H, W]; proposals: B x Tensor[R_i, 4]; image_sizes: B x (h, w).
            targets: B dicts with "boxes" Tensor[M, 4], "labels" int64[M] in 1..K, optional "ignore_boxes".
        Returns:
            training: (None, {"loss_roi_cls", "loss_roi_reg"}).
            eval: (B x dict(boxes Tensor[D, 4], scores Tensor[D], labels int64[D]), losses if targets else {}).
        """
        losses: Dict[str, Tensor] = {}
        if targets is not None:
            losses = self.losses_of(features, proposals, targets)
        elif self.training:
            raise ValueError("RoIHead needs targets in training mode")
        if self.training:
            return None, losses
        logits, deltas = self.predictor(self.box_head(self.roi_pool(features, proposals)))
        return self.postprocess(logits, deltas, proposals, image_sizes), losses

    def losses_of(self, features: Dict[str, Tensor], proposals: Sequence[Tensor],
                  targets: Sequence[Dict[str, Tensor]],
                  image_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> Dict[str, Tensor]:
        """The two losses over RoIs sampled from the proposals and ground truth (a fresh sampling
        generator in eval, so that validation losses repeat). ``image_sizes`` is not needed here
        (CascadeRoIHead.losses_of clips its refined boxes to them)."""
        device = proposals[0].device if len(proposals) else features[self.roi_pool.featmap_names[0]].device
        generator = self.rng.on(device) if self.training else self.rng.fresh(device)
        rois, labels, pos_rows, reg_targets = self.sample_targets(proposals, targets, generator)
        logits, deltas = self.predictor(self.box_head(self.roi_pool(features, rois)))
        return self.loss(logits, deltas, labels, pos_rows, reg_targets, rois=rois)

    # ------------------------------------------------------------------ training targets
    def label_proposals(self, proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                        gt_ignore: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """proposals: Tensor[R_i, 4] (ground truth already appended), gt_boxes: Tensor[M, 4],
        gt_labels: int64[M] -> (class labels int64[R_i]: -1 ignored, 0 background, else gt class;
        matched_idxs int64[R_i])."""
        matched, labels = self.assigner.assign(proposals, gt_boxes, gt_ignore)
        labels = labels.to(torch.int64)
        if gt_boxes.shape[0] > 0:
            labels = torch.where(labels == 1, gt_labels[matched], labels)
        return labels, matched

    def sample_targets(self, proposals: Sequence[Tensor], targets: Sequence[Dict[str, Tensor]],
                       generator: torch.Generator) -> Tuple[List[Tensor], Tensor, Tensor, Tensor]:
        """Append the ground truth to the proposals, assign, sample, encode.

        Returns:
            rois: B x Tensor[S_i, 4] sampled RoIs (positives first in each image);
            labels: int64[S] class labels of all sampled RoIs (0 = background);
            pos_rows: int64[P] rows of the positives in the concatenated S RoIs;
            reg_targets: Tensor[P, 4] encoded targets of those positives.
        """
        rois, labels, pos_rows, reg_targets, offset = [], [], [], [], 0
        for props, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(props)
            gt_labels = target["labels"].to(device=props.device, dtype=torch.int64)
            ignore = target.get("ignore_boxes")
            props = torch.cat((props, gt_boxes))  # (R_i + M, 4)
            cls_labels, matched = self.label_proposals(props, gt_boxes, gt_labels,
                                                       None if ignore is None else ignore.to(props))
            pos, neg = self.sampler.sample(cls_labels.clamp(max=1).to(torch.int8),
                                           generator=self.rng.for_image(target, generator))
            pos, neg = pos.to(props.device), neg.to(props.device)
            rois.append(torch.cat((props[pos], props[neg])))
            labels.append(torch.cat((cls_labels[pos], torch.zeros_like(neg))))
            pos_rows.append(torch.arange(offset, offset + pos.numel(), device=props.device))
            reg_targets.append(self.box_coder.encode(gt_boxes[matched[pos]], props[pos]) if pos.numel()
                               else props.new_zeros((0, 4)))
            offset += pos.numel() + neg.numel()
        return rois, torch.cat(labels), torch.cat(pos_rows), torch.cat(reg_targets)

    def loss(self, logits: Tensor, deltas: Tensor, labels: Tensor, pos_rows: Tensor,
             reg_targets: Tensor, rois: Optional[Sequence[Tensor]] = None) -> Dict[str, Tensor]:
        """logits: Tensor[S, K+1], deltas: Tensor[S, 4K or 4], labels: int64[S], pos_rows: int64[P],
        reg_targets: Tensor[P, 4], rois: B x Tensor[S_i, 4] the sampled RoIs (needed by box_loss "giou",
        which decodes the positives' deltas on them) -> loss_roi_cls, loss_roi_reg (sums divided by S, as
        torchvision; the regression loss times box_loss_weight)."""
        num_sampled = max(labels.numel(), 1)
        loss_cls = F.cross_entropy(logits, labels, reduction="sum") / num_sampled
        if pos_rows.numel() == 0:
            return {"loss_roi_cls": loss_cls, "loss_roi_reg": deltas.sum() * 0.0}
        deltas = deltas.view(deltas.shape[0], -1, 4)  # (S, 4K) -> (S, K, 4)  (or (S, 1, 4))
        cls_col = torch.zeros_like(pos_rows) if self.predictor.class_agnostic else labels[pos_rows] - 1
        pred = deltas[pos_rows, cls_col]  # (P, 4)
        if self.box_loss == "giou":
            if rois is None:
                raise ValueError("box_loss 'giou' decodes the predicted deltas on their RoIs: pass rois")
            pos_rois = torch.cat(list(rois))[pos_rows].float()  # (P, 4)
            # float32 whatever the autocast: bf16 resolves a coordinate of a few hundred pixels to 1-4 px,
            # too coarse for an overlap loss; decoding the encoded targets gives back the ground truth boxes.
            pred_boxes = self.box_coder.decode(pred.float(), pos_rois)
            gt_boxes = self.box_coder.decode(reg_targets.float(), pos_rois)
            loss_reg = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="sum") / num_sampled
        else:
            loss_reg = F.smooth_l1_loss(pred, reg_targets, beta=self.smooth_l1_beta, reduction="sum") / num_sampled
        return {"loss_roi_cls": loss_cls, "loss_roi_reg": loss_reg * self.box_loss_weight}

    # ------------------------------------------------------------------ inference
    def postprocess(self, logits: Tensor, deltas: Tensor, proposals: Sequence[Tensor],
                    image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """logits: Tensor[R, K+1], deltas: Tensor[R, 4K or 4], proposals: B x Tensor[R_i, 4] ->
        B x dict(boxes Tensor[D, 4], scores Tensor[D], labels int64[D] in 1..K)."""
        scores = F.softmax(logits, dim=-1)[:, 1:]  # (R, K+1) -> (R, K), background dropped
        deltas = deltas.view(deltas.shape[0], -1, 4)  # (R, 4K) -> (R, K, 4)  (or (R, 1, 4))
        counts = [p.shape[0] for p in proposals]
        results = []
        for props, sc, dl, size in zip(proposals, scores.split(counts), deltas.split(counts), image_sizes):
            rows, cols, s = self._above_threshold(sc)
            boxes = self.box_coder.decode(dl[rows, self._delta_slot(cols, dl)], props[rows])  # (n, 4)
            results.append(self._finish(boxes, s, cols, size))
        return results

    def select(self, scores: Tensor, boxes: Tensor, counts: Sequence[int],
               image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """:meth:`postprocess` for boxes already decoded: scores Tensor[R, K] (background dropped), boxes
        Tensor[R, 4] (one per RoI, CascadeRoIHead's) or Tensor[R, K or 1, 4] (per class, or one shared),
        counts: B x R_i -> B x dict(boxes, scores, labels)."""
        results = []
        for sc, bx, size in zip(scores.split(list(counts)), boxes.split(list(counts)), image_sizes):
            rows, cols, s = self._above_threshold(sc)
            picked = bx[rows] if bx.dim() == 2 else bx[rows, self._delta_slot(cols, bx)]
            results.append(self._finish(picked, s, cols, size))
        return results

    def postprocess_views(self, views: Sequence[ViewBatch], proposals: Sequence[Tensor],
                          image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """Detections averaged over test-time views (flip and/or scale test-time augmentation).

        Every proposal of image i is pooled in every view, at the place the view moves it to, from
        that view's features; the class probabilities and the class boxes (decoded in the view, then
        mapped back to the base view) are averaged over the views per RoI before the score threshold
        and NMS, so the augmentation refines each detection rather than adding duplicates to suppress.

        Args:
            views: V :class:`ViewBatch` of the B images (detkit.modeling.tta), the base view first.
            proposals: B x Tensor[R_i, 4] in base-view pixels. image_sizes: B x (h, w) of the base view.
        Returns:
            B x dict(boxes Tensor[D, 4], scores Tensor[D], labels int64[D] in 1..K) in base-view pixels.
        """
        scores, boxes = self.predict_views(views, proposals)
        return self.select(scores, boxes, [p.shape[0] for p in proposals], image_sizes)

    def predict_views(self, views: Sequence[ViewBatch], proposals: Sequence[Tensor],
                      image_sizes: Optional[Sequence[Tuple[int, int]]] = None) -> Tuple[Tensor, Tensor]:
        """Per-RoI predictions before post-processing, averaged over the views: the part of
        :meth:`postprocess_views` that a model ensemble (detkit.modeling.ensemble) averages over its members.

        Args:
            views: V :class:`ViewBatch`, the base view first. proposals: B x Tensor[R_i, 4], base-view pixels.
            image_sizes: unused here (CascadeRoIHead clips its refined boxes to them).
        Returns:
            (class probabilities Tensor[R, K], background dropped; boxes Tensor[R, K or 1, 4] in base-view
            pixels, decoded per class, or once per RoI for a class-agnostic predictor), R = sum of R_i.
        """
        view_props = [view.to_view(proposals) for view in views]  # V x B x (R_i, 4)
        pooled = [self.roi_pool(view.features, props) for view, props in zip(views, view_props)]
        logits, deltas = self.predictor(self.box_head(torch.cat(pooled) if len(pooled) > 1 else pooled[0]))
        n = logits.shape[0] // len(views)
        scores = average(F.softmax(logits, dim=-1).split(n))[:, 1:]  # (V*R, K+1) -> (R, K)
        counts = [p.shape[0] for p in proposals]
        boxes = []
        for view, props, dl in zip(views, view_props, deltas.split(n)):
            dl = dl.reshape(n, -1, 4)  # (R, K or 1, 4)
            slots = dl.shape[1]
            decoded = self.box_coder.decode(dl.reshape(-1, 4), torch.cat(props).repeat_interleave(slots, 0))
            if not view.identity:
                per_image = decoded.split([c * slots for c in counts])
                decoded = torch.cat(view.from_view(per_image))
            boxes.append(decoded.view(n, slots, 4))
        return scores, average(boxes)

    def postprocess_hflip(self, features: Dict[str, Tensor], proposals: Sequence[Tensor],
                          image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """:meth:`postprocess_views` over each image and its mirror image: ``features`` name ->
        Tensor[2B, C, H, W], the B images, then their mirror images in the same order."""
        return self.postprocess_views(hflip_views(features, image_sizes), proposals, image_sizes)

    def _above_threshold(self, scores: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """scores Tensor[R_i, K] -> (rows int64[n], class columns int64[n] in 0..K-1, scores[n]) above score_thresh."""
        # torchvision flattens (R_i, K) row-major; nonzero keeps that order.
        rows, cols = torch.nonzero(scores > self.score_thresh, as_tuple=True)
        return rows, cols, scores[rows, cols]

    @staticmethod
    def _delta_slot(cols: Tensor, deltas: Tensor) -> Tensor:
        """Which of the deltas' (R_i, K or 1, 4) slots each class column reads: its own, or the shared one."""
        return cols if deltas.shape[1] > 1 else torch.zeros_like(cols)

    def _finish(self, boxes: Tensor, scores: Tensor, cols: Tensor, size: Tuple[int, int]) -> Dict[str, Tensor]:
        """Clip, drop small boxes, suppress per class (hard or soft NMS), keep the top detections_per_img,
        and with ``box_voting`` move each kept box to the score-weighted mean of its class's candidates
        overlapping it at that IoU or more (detkit.ops.box_voting)."""
        boxes = clip_boxes(boxes, size)
        keep = remove_small_boxes(boxes, self.min_size)
        boxes, s, lab = boxes[keep], scores[keep], cols[keep] + 1
        if self.nms_method == "hard":
            # torchvision's coordinate-offset trick at every size, as the exported graph computes it (one
            # NMS operator); kept by decreasing score, equal scores by increasing row (detkit.ops.score_order)
            if self.kernels == "torchvision":  # torchvision's own call, its order of equal scores included
                keep = tv_batched_nms(boxes, s, lab, self.nms_thresh)[: self.detections_per_img]
            else:
                keep = batched_nms(boxes, s, lab, self.nms_thresh, mode="offsets")[: self.detections_per_img]
            kept_scores = s[keep]
        else:
            keep, kept_scores = batched_soft_nms(boxes, s, lab, method=self.nms_method, sigma=self.soft_nms_sigma,
                                                 iou_threshold=self.nms_thresh, score_threshold=self.score_thresh)
            keep, kept_scores = keep[: self.detections_per_img], kept_scores[: self.detections_per_img]
        kept_boxes = boxes[keep]
        if self.box_voting is not None:
            # the voters' weights are their scores before suppression (soft-NMS decays only the ranking)
            kept_boxes = box_voting(kept_boxes, lab[keep], boxes, s, lab, self.box_voting)
        return {"boxes": kept_boxes, "scores": kept_scores, "labels": lab[keep]}

