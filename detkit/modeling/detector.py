"""The two-stage detector (backbone -> RPN -> RoI head) and ``build_detector``, the one place reading the config.

Shape shorthand: B images, H_i/W_i size of image i as given (already resized by the data
pipeline), H/W padded batch size (multiples of size_divisible), M ground-truth boxes, D detections,
K classes without background.

Contract (torchvision's detectors): ``model(images, targets)`` in training returns
``{loss_rpn_cls, loss_rpn_reg, loss_roi_cls, loss_roi_reg}``; in eval ``model(images)`` returns
B dicts ``(boxes Tensor[D, 4], scores Tensor[D], labels int64[D] in 1..K)``, boxes rescaled to
``orig_sizes`` when given; in eval with targets it returns ``(detections, losses)``.
Normalisation ((x - pixel_mean) / pixel_std, fused into one multiply-add) and zero padding to a
multiple of size_divisible happen here, once, into a batch of the model's memory format
(``channels_last`` or ``contiguous``, :meth:`Detector.set_memory_format`).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.errors import ConfigError
from detkit.modeling.anchors import AnchorGenerator, resolve_anchor_shapes
from detkit.modeling.assigner import MaxIoUAssigner
from detkit.modeling.backbone import Backbone, load_backbone_weights
from detkit.modeling.cascade_head import CascadeRoIHead, default_stage_loss_weights, stage_box_weights
from detkit.modeling.codec import BoxCoder
from detkit.modeling.roi_head import BoxPredictor, ConvFCHead, FCHead, MultiLevelRoIAlign, RoIHead
from detkit.modeling.rpn import RegionProposalNetwork, RPNHead
from detkit.modeling.sampler import BalancedSampler
from detkit.modeling.tta import ViewBatch, tta_views
from detkit.runtime.memory_format import resolve_memory_format

__all__ = ["Detector", "build_detector", "MEMORY_FORMATS"]

MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}

LOSS_KEYS = ("loss_rpn_cls", "loss_rpn_reg", "loss_roi_cls", "loss_roi_reg")


class Detector(nn.Module):
    """Backbone + RegionProposalNetwork + RoIHead with input normalisation and batching.

    Args:
        backbone: Backbone (feature maps by name, ``feature_names`` finest first).
        rpn: RegionProposalNetwork over ``backbone.feature_names``.
        roi_head: RoIHead pooling from ``backbone.pool_names``, or a CascadeRoIHead (its losses are
            ``loss_roi_cls_s{t}`` / ``loss_roi_reg_s{t}`` per stage t instead of the two RoI losses).
        pixel_mean, pixel_std: per-channel RGB statistics of images scaled to [0, 1].
        size_divisible: padded sides are rounded up to a multiple of this.
        test_hflip: in eval, average each image's detections with its mirror image's
            (:meth:`RoIHead.postprocess_views`); twice the backbone work per image.
        test_scales: in eval, also average each image's detections over the image resized by these
            factors (relative to the test size; must include 1.0, the scale the RPN proposes at); with
            ``test_hflip`` every scale is also mirrored. (1.0,): no scale augmentation.
        test_resize: (min_size, max_size): in eval the detector resizes each image itself, exactly as
            torchvision's GeneralizedRCNNTransform (normalise, then bilinear float resize by
            min(min_size / shorter side, max_size / longer side), then pad) and returns boxes in the
            pixels of the images it was given. None (default): images come resized by the data pipeline.
    """

    def __init__(self, *, backbone: Backbone, rpn: RegionProposalNetwork, roi_head: Union[RoIHead, CascadeRoIHead],
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisible: int = 32,
                 test_hflip: bool = False, test_resize: Optional[Tuple[float, float]] = None,
                 test_scales: Sequence[float] = (1.0,)) -> None:
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_head = roi_head
        std = torch.as_tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)  # (3,) -> (3, 1, 1)
        mean = torch.as_tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)  # (3,) -> (3, 1, 1)
        # (x - mean) / std == x * (1 / std) + (-mean / std)
        self.register_buffer("pixel_scale", 1.0 / std, persistent=False)
        self.register_buffer("pixel_shift", -mean / std, persistent=False)
        # torchvision's normalisation, (x - mean) / std (not a multiply-add: the last bit matters for parity).
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.test_resize = None if test_resize is None else (float(test_resize[0]), float(test_resize[1]))
        self.size_divisible = int(size_divisible)
        self.test_hflip = bool(test_hflip)
        self.test_scales = tuple(view.scale for view in tta_views(test_scales, False))  # validated, 1.0 first
        self.memory_format = torch.contiguous_format

    def set_memory_format(self, name: str) -> "Detector":
        """Lay out every 4-d weight, and the batches :meth:`preprocess` builds, as ``name``
        ("channels_last" or "contiguous"). The values are unchanged, so state dicts load either way."""
        if name not in MEMORY_FORMATS:
            raise ValueError(f"memory format {name!r}: choose one of {', '.join(MEMORY_FORMATS)}")
        self.memory_format = MEMORY_FORMATS[name]
        return self.to(memory_format=self.memory_format)

    @property
    def resizes(self) -> bool:
        """Whether :meth:`preprocess` resizes (``test_resize`` is set and the model is in eval mode)."""
        return self.test_resize is not None and not self.training

    @property
    def test_time_augmented(self) -> bool:
        """Whether eval averages views (``test_hflip`` or more than one of ``test_scales``)."""
        return self.test_hflip or len(self.test_scales) > 1

    def _resized_normalised(self, img: Tensor, view_scale: float = 1.0) -> Tensor:
        """Tensor[3, H_i, W_i] in [0, 1] -> normalised and resized Tensor[3, H'_i, W'_i], torchvision's way
        (to ``view_scale`` x the test size)."""
        img = (img.to(self.pixel_mean) - self.pixel_mean) / self.pixel_std
        h, w = int(img.shape[-2]), int(img.shape[-1])
        min_size, max_size = self.test_resize
        scale = view_scale * min(min_size / min(h, w), max_size / max(h, w))
        return F.interpolate(img[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                             align_corners=False)[0]

    def preprocess(self, images: Union[Sequence[Tensor], Tensor],
                   view_scale: float = 1.0) -> Tuple[Tensor, List[Tuple[int, int]]]:
        """B x Tensor[3, H_i, W_i] in [0, 1] -> (normalised zero-padded Tensor[B, 3, H, W], B x (H_i, W_i)),
        the sizes being those after the model's own resize when :attr:`resizes`. ``view_scale`` != 1
        (a test-time view) resizes each image by that factor first (bilinear), or with :attr:`resizes`
        resizes to that factor x the test size."""
        if len(images) == 0:
            raise ValueError("Detector got an empty list of images")
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i} must be a Tensor[3, H, W], got shape {tuple(img.shape)}")
        resizing = self.resizes
        if resizing:
            images = [self._resized_normalised(img, view_scale) for img in images]
        elif view_scale != 1.0:
            images = [_rescaled(img, view_scale) for img in images]
        sizes = [(int(img.shape[1]), int(img.shape[2])) for img in images]
        d = self.size_divisible
        height = -(-max(h for h, _ in sizes) // d) * d
        width = -(-max(w for _, w in sizes) // d) * d
        batch = torch.empty((len(sizes), 3, height, width), dtype=self.pixel_scale.dtype,
                            device=self.pixel_scale.device, memory_format=self.memory_format).zero_()
        for i, (img, (h, w)) in enumerate(zip(images, sizes)):
            if resizing:  # already normalised
                batch[i, :, :h, :w].copy_(img)
            else:
                torch.addcmul(self.pixel_shift, img.to(batch), self.pixel_scale, out=batch[i, :, :h, :w])
        return batch, sizes

    def forward(self, images: Union[Sequence[Tensor], Tensor], targets: Optional[Sequence[Dict[str, Tensor]]] = None,
                orig_sizes: Optional[Sequence[Tuple[int, int]]] = None):
        """
        Args:
            images: B x Tensor[3, H_i, W_i] float in [0, 1] (or a Tensor[B, 3, H, W]).
            targets: B dicts: "boxes" float Tensor[M, 4] xyxy in the given images' pixels,
                "labels" int64[M] in 1..K, optional "ignore_boxes" Tensor[K', 4]. Required in training.
            orig_sizes: B x (h, w) to rescale eval boxes to (e.g. the images before the resize).
        Returns:
            training: dict of the four losses; eval: B detection dicts, or (detections, losses) with targets.
        """
        if self.training and targets is None:
            raise ValueError("Detector needs targets in training mode")
        if targets is not None:
            self._check_targets(targets, len(images))
        if self.resizes:
            given = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
            orig_sizes = orig_sizes if orig_sizes is not None else given  # boxes back to the given pixels
            if targets is not None:  # validation losses: the targets follow the model's resize
                targets = self._resized_targets(targets, given)
        if self.test_time_augmented and not self.training:
            return self._forward_views(images, targets, orig_sizes)
        batch, image_sizes = self.preprocess(images)
        features = self.backbone(batch)
        proposals, rpn_losses = self.rpn(list(features.values()), image_sizes, targets)
        detections, roi_losses = self.roi_head(features, proposals, image_sizes, targets)
        losses = {**rpn_losses, **roi_losses}
        if self.training:
            return losses
        if orig_sizes is not None:
            detections = self.rescale(detections, image_sizes, orig_sizes)
        return (detections, losses) if targets is not None else detections

    def _forward_views(self, images: Union[Sequence[Tensor], Tensor], targets: Optional[Sequence[Dict[str, Tensor]]],
                       orig_sizes: Optional[Sequence[Tuple[int, int]]]):
        """Eval forward with test-time augmentation (detkit.modeling.tta): for each of
        ``test_scales`` the B images (and, with ``test_hflip``, their mirror images: one batch of 2B) go
        through the backbone; the RPN proposes on the B images at scale 1 only, and the RoI head
        averages every view per proposal. Losses (with targets) are the plain forward's."""
        views, image_sizes = self.view_batches(images)
        own = views[0].features
        proposals, rpn_losses = self.rpn(list(own.values()), image_sizes, targets)
        roi_losses = self.roi_head.losses_of(own, proposals, targets, image_sizes) if targets is not None else {}
        detections = self.roi_head.postprocess_views(views, proposals, image_sizes)
        if orig_sizes is not None:
            detections = self.rescale(detections, image_sizes, orig_sizes)
        return (detections, {**rpn_losses, **roi_losses}) if targets is not None else detections

    def view_batches(self, images: Union[Sequence[Tensor], Tensor]) -> Tuple[List[ViewBatch], List[Tuple[int, int]]]:
        """B images -> (the V test-time views' :class:`ViewBatch` (the base view first; one view when the
        model has no test-time augmentation), B x (h, w) of the base view). Every scale's B images, with
        ``test_hflip`` also their mirror images (one batch of 2B), go through the backbone once."""
        num = len(images)
        views: List[ViewBatch] = []
        image_sizes: List[Tuple[int, int]] = []
        for scale in self.test_scales:  # 1.0 first: its sizes are the base view's
            given = list(images) + ([img.flip(-1) for img in images] if self.test_hflip else [])
            batch, sizes = self.preprocess(given, view_scale=scale)
            features = self.backbone(batch)  # name -> Tensor[V_s*B, C, H, W]
            if not views:
                image_sizes = sizes[:num]
            views.append(ViewBatch({k: f[:num] for k, f in features.items()}, sizes[:num], image_sizes))
            if self.test_hflip:
                views.append(ViewBatch({k: f[num:] for k, f in features.items()}, sizes[num:], image_sizes, flip=True))
        return views, image_sizes

    def _resized_targets(self, targets: Sequence[Dict[str, Tensor]],
                         sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """Targets of images of ``sizes`` with their boxes scaled as :meth:`preprocess` resizes the images."""
        out = []
        for t, (h, w) in zip(targets, sizes):
            min_size, max_size = self.test_resize
            scale = min(min_size / min(h, w), max_size / max(h, w))
            nh, nw = math.floor(h * scale), math.floor(w * scale)  # F.interpolate's output size
            t = dict(t)
            for key in ("boxes", "ignore_boxes"):
                if key in t:
                    t[key] = t[key] * t[key].new_tensor([nw / w, nh / h, nw / w, nh / h])
            out.append(t)
        return out

    def _check_targets(self, targets: Sequence[Dict[str, Tensor]], num_images: int) -> None:
        if len(targets) != num_images:
            raise ValueError(f"got {len(targets)} targets for {num_images} images")
        num_classes = self.roi_head.predictor.num_classes
        for i, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"]
            if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
                raise ValueError(f"targets[{i}]['boxes'] must be a float Tensor[M, 4], got {boxes.dtype} "
                                 f"{tuple(boxes.shape)}")
            if labels.shape != (boxes.shape[0],):
                raise ValueError(f"targets[{i}]['labels'] must have shape ({boxes.shape[0]},), "
                                 f"got {tuple(labels.shape)}")
        # The label range of the whole batch in one read (one host synchronisation for CUDA labels).
        present = [t["labels"] for t in targets if t["labels"].numel()]
        if not present:
            return
        every = torch.cat([labels.to(present[0].device) for labels in present])
        low, high = torch.stack((every.min(), every.max())).tolist()
        if low >= 1 and high <= num_classes:
            return
        for i, t in enumerate(targets):
            labels = t["labels"]
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
                raise ValueError(f"targets[{i}]['labels'] must lie in 1..{num_classes} (0 is background), "
                                 f"got {labels.tolist()}")

    @staticmethod
    def rescale(detections: List[Dict[str, Tensor]], image_sizes: Sequence[Tuple[int, int]],
                orig_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """Scale boxes from the input size (h, w) to orig (h, w) (torchvision's ratio) and clip to it."""
        out = []
        for det, (h, w), (oh, ow) in zip(detections, image_sizes, orig_sizes):
            scale = det["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
            boxes = det["boxes"] * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            out.append({**det, "boxes": boxes})
        return out

    def set_anchor_shapes(self, shapes: Sequence[Sequence[Sequence[float]]]) -> None:
        """Replace the RPN's anchor shapes (L x A x [w, h]; same L and A), e.g. learned anchors refined
        online. Shapes are configuration, not weights: they are not in ``state_dict()``."""
        self.rpn.anchor_generator.set_shapes(shapes)

    def rng_state_dict(self) -> Dict[str, Dict[str, Tensor]]:
        """States of the RPN and RoI samplers' CPU generators; checkpoint them for an exact resume
        (they are not in ``state_dict()``, which holds tensors only)."""
        return {"rpn": self.rpn.rng.state_dict(), "roi_head": self.roi_head.rng.state_dict()}

    def load_rng_state_dict(self, state: Dict[str, Dict[str, Tensor]]) -> None:
        """Restore what :meth:`rng_state_dict` returned."""
        self.rpn.rng.load_state_dict(state["rpn"])
        self.roi_head.rng.load_state_dict(state["roi_head"])


def build_detector(cfg, num_classes: int, anchor_shapes=None, *, log: Callable[[str], None] = print) -> Detector:
    """Wire the detector from a Config.

    Args:
        cfg: detkit.config.Config (reads cfg.model and cfg.train.seed).
        num_classes: K, without background.
        anchor_shapes: L x A x (w, h), the shapes a run resolved (its checkpoint's or its fit's, see
            :func:`detkit.modeling.anchors.resolve_anchor_shapes`). None: ``model.anchors.shapes``,
            or when that is None the manual sizes x ratios.
        log: where weight-loading reports and warnings go.
    """
    m = cfg.model
    if num_classes < 1:
        raise ConfigError(f"the data set must have at least one class, got num_classes = {num_classes}")
    bb = m.backbone
    backbone = Backbone(depth=bb.depth, norm=bb.norm, freeze_at=bb.freeze_at, features=bb.features,
                        fpn_channels=bb.fpn_channels, zero_init_residual=bb.zero_init_residual,
                        fpn_norm=bb.fpn_norm, norm_eps=bb.norm_eps)
    if bb.weights:
        load_backbone_weights(backbone, bb.weights, log=log)

    a = m.anchors
    shapes = anchor_shapes if anchor_shapes is not None else resolve_anchor_shapes(
        mode=a.mode, sizes=a.sizes, ratios=a.ratios, configured=a.shapes,
        log=log if a.shapes is None else (lambda *_: None))
    if len(shapes) != len(backbone.strides):
        raise ConfigError(f"anchor shapes have {len(shapes)} levels but model.backbone.features = "
                          f"'{bb.features}' gives {len(backbone.strides)} (strides {backbone.strides})")
    anchor_generator = AnchorGenerator(shapes=shapes, strides=backbone.strides, offset=a.offset,
                                       round_base=a.round_base, strides_from_size=a.strides_from_size)

    r = m.rpn
    rpn = RegionProposalNetwork(
        anchor_generator=anchor_generator,
        head=RPNHead(in_channels=backbone.out_channels, num_anchors=anchor_generator.num_anchors_per_location,
                     num_convs=r.head_convs),
        assigner=MaxIoUAssigner(pos_iou_thr=r.fg_iou_thresh, neg_iou_thr=r.bg_iou_thresh,
                                allow_low_quality_matches=r.allow_low_quality_matches,
                                ignore_iof_thr=r.ignore_iof_thresh),
        sampler=BalancedSampler(batch_size_per_image=r.batch_size_per_image, positive_fraction=r.positive_fraction),
        box_coder=BoxCoder(weights=tuple(r.box_weights), clamp=r.delta_clamp),
        pre_nms_top_n=(r.pre_nms_top_n_train, r.pre_nms_top_n_test),
        post_nms_top_n=(r.post_nms_top_n_train, r.post_nms_top_n_test),
        nms_thresh=r.nms_thresh, score_thresh=r.score_thresh, min_size=r.min_size,
        smooth_l1_beta=r.smooth_l1_beta, seed=cfg.train.seed, kernels=m.kernels)

    h = m.roi_head
    pool_strides = [backbone.strides[backbone.feature_names.index(n)] for n in backbone.pool_names]
    roi_pool = MultiLevelRoIAlign(featmap_names=backbone.pool_names, strides=pool_strides, output_size=h.pool_size,
                                  sampling_ratio=h.sampling_ratio, aligned=h.aligned, kernel=m.kernels)

    if h.cascade:  # Cascade R-CNN: one class-agnostic stage per IoU threshold (detkit/modeling/cascade_head.py)
        stages = [_roi_head(cfg, backbone, roi_pool, num_classes, fg_iou=iou, bg_iou=iou,
                            box_weights=stage_box_weights(h.box_weights, t + 1), class_agnostic=True,
                            seed=cfg.train.seed + 1 + t) for t, iou in enumerate(h.cascade)]
        roi_head = CascadeRoIHead(stages=stages, stage_loss_weights=h.cascade_loss_weights
                                  or default_stage_loss_weights(len(stages)))
    else:
        roi_head = _roi_head(cfg, backbone, roi_pool, num_classes, fg_iou=h.fg_iou_thresh, bg_iou=h.bg_iou_thresh,
                             box_weights=h.box_weights, class_agnostic=h.class_agnostic, seed=cfg.train.seed + 1)

    detector = Detector(backbone=backbone, rpn=rpn, roi_head=roi_head, pixel_mean=m.pixel_mean,
                        pixel_std=m.pixel_std, size_divisible=m.size_divisible, test_hflip=m.test_hflip,
                        test_resize=_model_test_resize(cfg.data), test_scales=m.test_scales)
    # auto resolves as for inference here; the trainer re-lays the model out for its training precision.
    return detector.set_memory_format(resolve_memory_format(m.memory_format))


def _roi_head(cfg, backbone: Backbone, roi_pool: MultiLevelRoIAlign, num_classes: int, *, fg_iou: float,
              bg_iou: float, box_weights: Sequence[float], class_agnostic: bool, seed: int) -> RoIHead:
    """One RoIHead (the single head, or one cascade stage) with its own box head and predictor, from
    cfg.model.roi_head but for the given assignment thresholds, box coder weights, regression and seed."""
    m, h = cfg.model, cfg.model.roi_head
    if h.num_conv > 0:
        box_head = ConvFCHead(in_channels=backbone.out_channels, pool_size=h.pool_size, num_conv=h.num_conv,
                              conv_dim=h.conv_dim, conv_norm=h.conv_norm, num_fc=h.num_fc, fc_dim=h.fc_dim,
                              norm=h.fc_norm)
    else:
        box_head = FCHead(in_channels=backbone.out_channels, pool_size=h.pool_size, num_fc=h.num_fc,
                          fc_dim=h.fc_dim, norm=h.fc_norm)
    return RoIHead(
        roi_pool=roi_pool, box_head=box_head,
        predictor=BoxPredictor(in_features=box_head.out_features, num_classes=num_classes,
                               class_agnostic=class_agnostic),
        assigner=MaxIoUAssigner(pos_iou_thr=fg_iou, neg_iou_thr=bg_iou,
                                allow_low_quality_matches=False, ignore_iof_thr=h.ignore_iof_thresh),
        sampler=BalancedSampler(batch_size_per_image=h.batch_size_per_image, positive_fraction=h.positive_fraction),
        box_coder=BoxCoder(weights=tuple(box_weights), clamp=h.delta_clamp),
        score_thresh=h.score_thresh, nms_thresh=h.nms_thresh, nms_method=h.nms_method,
        soft_nms_sigma=h.soft_nms_sigma, detections_per_img=h.detections_per_img,
        min_size=h.min_size, smooth_l1_beta=h.smooth_l1_beta, seed=seed, kernels=m.kernels,
        box_voting=h.box_voting, box_loss=h.box_loss, box_loss_weight=h.box_loss_weight)


def _rescaled(img: Tensor, scale: float) -> Tensor:
    """Tensor[3, H, W] -> Tensor[3, round(H * scale), round(W * scale)], bilinear (antialiased when shrinking)."""
    h, w = int(img.shape[-2]), int(img.shape[-1])
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False,
                         antialias=scale < 1.0)[0].to(img.dtype)


def _model_test_resize(data_cfg) -> Optional[Tuple[float, float]]:
    """(test min size, max size) when ``data.test_resize`` = "model" (the detector resizes in eval), else None."""
    if data_cfg.test_resize != "model":
        return None
    short = data_cfg.test_min_size if data_cfg.test_min_size is not None else data_cfg.min_size[-1]
    return float(short), float(data_cfg.max_size)
