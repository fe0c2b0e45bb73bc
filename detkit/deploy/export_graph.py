"""The deployable form of a trained Detector: one image in, detections in its pixels out, all in one graph.

Shape shorthand: H/W the input image's size, h/w its resized size, Hp/Wp the padded size, L levels,
A anchors per location, C channels, S pooled side, T candidate proposals, R proposals, K classes
without background, D detections.

``ExportableDetector(detector, min_size=S, max_size=M)`` holds the trained modules of a
:class:`detkit.modeling.detector.Detector` (backbone, FPN, RPN head, box head, predictor) and redoes
everything around them with operators that ONNX and TorchScript know, with the eager model's
semantics:

- resize: torchvision's rule (scale = min(S / shorter, M / longer), size floor(side * scale), in
  float64 as the eager transform computes it in Python), then cv2.INTER_LINEAR's own fixed-point
  arithmetic on the uint8 pixels (:func:`cv2_linear_resize`), because the eager pipeline resizes with
  cv2: a float bilinear resize differs by one intensity level on about one pixel in ten, and a model
  trained from scratch can move a low score by 0.2 for that;
- normalisation and zero padding to a multiple of ``size_divisible`` (F.pad);
- anchors tiled in the graph for the feature sizes of the input (float64, as
  :class:`detkit.modeling.anchors.AnchorGenerator`), whatever mode chose their shapes: the shapes are
  baked in as constants;
- proposals: per level top-k (:func:`detkit.ops.score_order.topk_stable`, ONNX's TopK), decoding,
  clipping, min-size and score filters as boolean masks, then one ``torchvision.ops.nms`` per level
  (the eager RPN's NMS within each level), the levels' kept boxes merged by decreasing score, top
  post-NMS;
- RoIAlign per level with ``torchvision.ops.roi_align`` (the Numba kernel's sampling is
  torchvision's) and torchvision's level mapping; the pooled rows are put back in the proposals'
  order, so that the RoI head sees its rows in the eager model's order;
- the RoI head's softmax, class-specific decoding, clipping, score threshold, per-class NMS (the
  coordinate-offset trick of :func:`detkit.ops.nms.offset_by_group`, as the eager RoI head at every
  size), top ``detections_per_img``, and the rescale to the input image's pixels.

Equal scores: every ranking here follows the eager model's rule (:mod:`detkit.ops.score_order`): by
decreasing score, equal scores by increasing index. The rows are in the eager model's order at every
step, ONNX's TopK and NonMaxSuppression order equal values by increasing index, and so do torchvision's
CPU ``nms`` and ``topk_stable`` in TorchScript; so the exported graph keeps the same candidates as the
eager model when scores tie (they do: saturated sigmoids and softmaxes round to equal float32, and
ReLU-dead regions give equal logits). NMS thresholds are passed as the largest float32 not above them:
ONNX's NonMaxSuppression compares the float32 IoU with a float32 threshold, the eager kernels with
the float64 one, and for float32 IoUs ``iou > t`` and ``iou > that float32`` are the same test.

The only data-dependent sizes (the number of proposals and detections) come out of NMS and masks,
which export as such; every other size is computed from the input's shape in tensors, so the traced
graph works at any image size. Single images only: the batch dimension is not part of the graph.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align as tv_roi_align

from detkit.ops.boxes import clip_boxes, remove_small_boxes
from detkit.ops.nms import offset_by_group
from detkit.ops.score_order import topk_stable

__all__ = ["ExportableDetector", "OUTPUT_NAMES", "cv2_linear_resize", "resize_for_detector", "UnexportableSetting",
           "unexportable_settings", "describe_unexportable", "nms_threshold", "CASCADE_UNEXPORTABLE"]

OUTPUT_NAMES = ("boxes", "scores", "labels")
CASCADE_UNEXPORTABLE = ("the exported graph computes the single RoI head only, not the stages of a cascade "
                        "(model.roi_head.cascade); run a cascade model with `detkit infer` or detkit.load_model, "
                        "or, to export, train one without model.roi_head.cascade (it is the architecture, so no "
                        "override of this checkpoint removes it)")


class UnexportableSetting(NamedTuple):
    """An inference setting the exported graph does not compute: ``key=value`` as configured, the
    ``exportable`` value to set instead, and why."""

    key: str
    value: str
    exportable: str
    why: str


def unexportable_settings(*, test_hflip: bool, nms_method: str, test_resize: str = "pipeline",
                          strides_from_size: bool = False,
                          box_voting: Optional[float] = None,
                          test_scales: Sequence[float] = (1.0,)) -> List[UnexportableSetting]:
    """Every inference setting of a detector that its exported graph would not reproduce (empty: exportable).

    Collected all at once so that a user learns every override to give from one error, not one per try.
    """
    found = []
    if nms_method != "hard":
        # Soft-NMS is a sequential loop with data-dependent decay: ONNX and TorchScript graphs of it
        # would not be the eager model's. Refuse rather than export a different detector.
        found.append(UnexportableSetting("model.roi_head.nms_method", nms_method, "hard",
                                         "soft-NMS has no ONNX or TorchScript form (hard NMS runs at "
                                         "model.roi_head.nms_thresh)"))
    if box_voting is not None:
        found.append(UnexportableSetting("model.roi_head.box_voting", str(box_voting), "null",
                                         "box voting averages the candidates NMS removes, which the exported "
                                         "graph does not keep"))
    if test_hflip:
        found.append(UnexportableSetting("model.test_hflip", "true", "false",
                                         "flip test-time augmentation needs a second, mirrored pass, which the "
                                         "exported single-pass graph does not compute"))
    if [float(x) for x in test_scales] != [1.0]:
        found.append(UnexportableSetting("model.test_scales", "[" + ",".join(str(float(x)) for x in test_scales)
                                         + "]", "[1.0]",
                                         "scale test-time augmentation needs a pass per scale, which the exported "
                                         "single-pass graph does not compute"))
    if test_resize != "pipeline":
        found.append(UnexportableSetting("data.test_resize", test_resize, "pipeline",
                                         "the graph resizes the uint8 image as the data pipeline does (cv2), "
                                         "not the normalised float image as torchvision's transform"))
    if strides_from_size:
        found.append(UnexportableSetting("model.anchors.strides_from_size", "true", "false",
                                         "the graph tiles anchors at the nominal strides"))
    return found


def describe_unexportable(settings: List[UnexportableSetting]) -> str:
    """One line per setting (``key=value: why; set key=exportable``) and the override line that fixes them all."""
    lines = [f"  {s.key}={s.value}: {s.why}; set {s.key}={s.exportable}" for s in settings]
    fix = " ".join(f"{s.key}={s.exportable}" for s in settings)
    return "\n".join(lines + [f"export with the override{'s' if len(settings) > 1 else ''}: {fix}"])


# cv2.INTER_LINEAR on 8-bit images works in fixed point: tap weights are rounded to 11 bits
# (INTER_RESIZE_COEF_BITS), the horizontal pass sums integer products, and the vertical pass
# rescales with shifts (OpenCV's VResizeLinear for uchar). Reproducing it keeps the exported
# model's input identical to the eager pipeline's.
_COEF_SCALE = 2048  # 1 << INTER_RESIZE_COEF_BITS


def _linear_taps(src: Tensor, dst: Tensor, edge_weights: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Taps of cv2's linear resize along one axis from ``src`` to ``dst`` samples (int64[1] each):
    (first index int64[dst], second index int64[dst], weights int32[dst] of each, summing to ~2048).

    OpenCV treats the borders differently along the two axes: horizontally a position before the
    first or after the last pixel takes that pixel with its full weight (``edge_weights=True``);
    vertically only the row indices are clamped and the fractional weights stay, so both taps read
    the edge row and their separately rounded products are summed.

    Sizes stay 1-element tensors, never 0-d: the ONNX exporter computes 0-d arithmetic in float32,
    and the positions must be computed in float64, as OpenCV does, to round the same way."""
    scale = src.to(torch.float64) / dst.to(torch.float64)  # (1,)
    steps = torch.arange(dst[0], dtype=torch.int64).to(torch.float64)  # (dst,)
    pos = ((steps + 0.5) * scale - 0.5).to(torch.float32)  # float, as cv2
    floor = torch.floor(pos)
    frac = pos - floor
    first = floor.to(torch.int64)
    last = src - 1  # (1,)
    zero = torch.zeros_like(first)
    if edge_weights:
        before, after = first < 0, first >= last
        frac = torch.where(before | after, torch.zeros_like(frac), frac)
        first = torch.where(before, zero, first)
        first = torch.where(after, last.expand_as(first), first)
        second = torch.minimum(first + 1, last)
    else:
        second = torch.minimum(torch.maximum(first + 1, zero), last)
        first = torch.minimum(torch.maximum(first, zero), last)
    w_first = torch.round((1.0 - frac) * _COEF_SCALE).to(torch.int32)
    w_second = torch.round(frac * _COEF_SCALE).to(torch.int32)
    return first, second, w_first, w_second


def cv2_linear_resize(image: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` in torch operators.

    image: uint8[H, W, 3]; height, width: int64[1] -> float32[1, 3, height, width] holding the
    resized integer intensities (0..255), as OpenCV computes them for 8-bit images.
    """
    orig = torch._shape_as_tensor(image)
    x0, x1, wx0, wx1 = _linear_taps(orig[1:2], width, edge_weights=True)
    y0, y1, wy0, wy1 = _linear_taps(orig[0:1], height, edge_weights=False)
    pixels = image.to(torch.int32)
    # horizontal pass: (H, W, 3) -> (H, width, 3), weights summing to 2048
    rows = pixels.index_select(1, x0) * wx0[None, :, None] + pixels.index_select(1, x1) * wx1[None, :, None]
    rows = torch.div(rows, 16, rounding_mode="floor")  # >> 4
    # vertical pass: (H, width, 3) -> (height, width, 3); (a >> 16) + (b >> 16) + 2 >> 2, as OpenCV
    top = torch.div(rows.index_select(0, y0) * wy0[:, None, None], 65536, rounding_mode="floor")
    bottom = torch.div(rows.index_select(0, y1) * wy1[:, None, None], 65536, rounding_mode="floor")
    out = torch.div(top + bottom + 2, 4, rounding_mode="floor").clamp(0, 255)
    return out.permute(2, 0, 1).unsqueeze(0).to(torch.float32)  # (h, w, 3) -> (1, 3, h, w)


def resize_for_detector(image: Tensor, min_size: float, max_size: float) -> Tuple[Tensor, Tensor, Tensor]:
    """The eager test transform in the graph: image uint8[H, W, 3] -> (float32[1, 3, h, w] with the
    resized intensities 0..255, resized size int64[2] (h, w), original size int64[2] (H, W)).

    torchvision's rule (scale = min(min_size / shorter, max_size / longer), sides floor(side * scale),
    at least 1), computed in float64 as :func:`detkit.data.transforms.resize_scale` does in Python,
    then :func:`cv2_linear_resize` as the eager pipeline's cv2.resize."""
    orig = torch._shape_as_tensor(image)[:2]  # (H, W), traced from the input, not a constant
    side = orig.to(torch.float64)  # no 0-d tensors (see _linear_taps)
    # tensor / tensor: ``float / tensor`` is computed as float * reciprocal(tensor), which rounds
    # differently (443 * (320 / 443) would give 319.99999999999994 and a 319-pixel side)
    limits = torch.tensor([float(min_size), float(max_size)], dtype=torch.float64)
    ratios = limits / torch.cat((side.amin(0, keepdim=True), side.amax(0, keepdim=True)))  # (2,)
    scale = ratios.amin(0, keepdim=True)  # (1,)
    new = torch.floor(side * scale).clamp(min=1).to(torch.int64)  # (h, w)
    return cv2_linear_resize(image, new[0:1], new[1:2]), new, orig


def nms_threshold(iou_threshold: float) -> float:
    """The largest float32 that is not above ``iou_threshold``.

    ONNX's NonMaxSuppression takes its threshold as a float32 and compares the float32 IoU with it;
    torchvision's and detkit's kernels compare with the float64 threshold. For a float32 IoU,
    ``iou > t`` and ``iou > nms_threshold(t)`` are the same test (no float32 lies in between), whereas
    the float32 nearest to t (0.3 -> 0.30000001) would keep a box whose IoU is exactly that float32.
    """
    t32 = np.float32(iou_threshold)
    if float(t32) > iou_threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


def _offset_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group by torchvision's coordinate-offset trick, which exports as one operator:
    the eager RoI head's ``batched_nms(..., mode="offsets")``, with the same offsets.

    boxes: Tensor[N, 4], scores: Tensor[N], groups: int64[N] -> kept indices int64[K] by decreasing
    score, equal scores by increasing index.
    """
    return tv_nms(offset_by_group(boxes, groups), scores, nms_threshold(iou_threshold))


def _per_group_nms(boxes: Tensor, scores: Tensor, groups: Tensor, num_groups: int, iou_threshold: float) -> Tensor:
    """NMS within each of ``num_groups`` groups, one NMS operator per group (no offsets): the eager RPN's
    ``batched_nms(..., mode="per_group")``.

    boxes: Tensor[N, 4], scores: Tensor[N], groups: int64[N] in [0, num_groups), non-decreasing (the
    RPN's candidates come level by level) -> kept indices int64[K] by decreasing score, equal scores
    by increasing index: each group's kept indices come in that order and below the next group's, so
    a stable ranking of their concatenation orders equal scores by index.
    """
    kept = []
    for group in range(num_groups):
        rows = torch.where(groups == group)[0]
        kept.append(rows[tv_nms(boxes[rows], scores[rows], nms_threshold(iou_threshold))])
    kept = torch.cat(kept)
    order = topk_stable(scores[kept], torch._shape_as_tensor(kept)[0])[1]
    return kept[order]


class ExportableDetector(nn.Module):
    """A trained Detector as a single-image graph: ``forward(image uint8[H, W, 3] RGB)`` ->
    ``(boxes float32[D, 4] xyxy in the image's pixels, scores float32[D], labels int64[D] in 1..K)``.

    Args:
        detector: a trained detkit Detector in eval mode (its modules are shared, not copied; fold its
            BatchNorm first for a leaner graph).
        min_size, max_size: the test-time resize (``data.test_min_size`` or the last ``data.min_size``,
            and ``data.max_size``).
    """

    def __init__(self, detector: nn.Module, *, min_size: int, max_size: int) -> None:
        super().__init__()
        rpn, roi = detector.rpn, detector.roi_head
        unexportable = unexportable_settings(
            test_hflip=bool(getattr(detector, "test_hflip", False)), nms_method=roi.nms_method,
            test_resize="model" if getattr(detector, "test_resize", None) is not None else "pipeline",
            strides_from_size=rpn.anchor_generator.strides_from_size,
            box_voting=getattr(roi, "box_voting", None), test_scales=getattr(detector, "test_scales", (1.0,)))
        if hasattr(roi, "stages"):  # CascadeRoIHead: an architecture no override turns into the single head
            raise ValueError(CASCADE_UNEXPORTABLE)
        if unexportable:
            raise ValueError("the detector has inference settings the exported graph does not compute:\n"
                             + describe_unexportable(unexportable))
        self.backbone = detector.backbone
        self.rpn_head = rpn.head
        self.box_head = roi.box_head
        self.predictor = roi.predictor
        self.level_mapper = roi.roi_pool.mapper
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.size_divisible = int(detector.size_divisible)
        self.register_buffer("pixel_scale", detector.pixel_scale.detach().clone().view(1, 3, 1, 1) / 255.0)
        self.register_buffer("pixel_shift", detector.pixel_shift.detach().clone().view(1, 3, 1, 1))
        generator = rpn.anchor_generator
        self.anchor_strides = list(generator.strides)
        self.anchor_offset = float(generator.offset)
        for level in range(generator.num_levels):  # (A, 4) float64 zero-centred anchors per level
            self.register_buffer(f"base_anchors_{level}", generator.base_anchors(level, torch.float64))
        self.num_anchors = generator.num_anchors_per_location
        self.rpn_coder, self.roi_coder = rpn.box_coder, roi.box_coder
        self.pre_nms_top_n, self.post_nms_top_n = int(rpn.pre_nms_top_n[1]), int(rpn.post_nms_top_n[1])
        self.rpn_nms_thresh, self.rpn_score_thresh = rpn.nms_thresh, rpn.score_thresh
        self.rpn_min_size = rpn.min_size
        pool = roi.roi_pool
        self.pool_levels = [detector.backbone.feature_names.index(n) for n in pool.featmap_names]
        self.pool_scales = list(pool.scales)
        self.pool_output_size = pool.output_size
        self.sampling_ratio, self.aligned = pool.sampling_ratio, pool.aligned
        self.score_thresh, self.nms_thresh = roi.score_thresh, roi.nms_thresh
        self.detections_per_img, self.roi_min_size = roi.detections_per_img, roi.min_size

    # ------------------------------------------------------------------ input
    def resize_and_normalise(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """image uint8[H, W, 3] -> (normalised zero-padded Tensor[1, 3, Hp, Wp], resized size
        int64[2] (h, w), original size int64[2] (H, W))."""
        x, new, orig = resize_for_detector(image, self.min_size, self.max_size)
        x = x * self.pixel_scale + self.pixel_shift
        d = self.size_divisible
        pad = torch.div(new + (d - 1), d, rounding_mode="floor") * d - new  # (pad_h, pad_w)
        return F.pad(x, (0, pad[1], 0, pad[0])), new, orig

    # ------------------------------------------------------------------ first stage
    def level_anchors(self, level: int, feature: Tensor) -> Tensor:
        """Anchors of one level over feature Tensor[1, C, H_l, W_l]: Tensor[H_l*W_l*A, 4] float32,
        in the AnchorGenerator's order (row-major positions, then the A shapes)."""
        size = torch._shape_as_tensor(feature)[2:]
        stride = float(self.anchor_strides[level])
        # integer ranges cast to float64 (a float Range would be exported in float32)
        shifts_y = (torch.arange(size[0]).to(torch.float64) + self.anchor_offset) * stride  # (H_l,)
        shifts_x = (torch.arange(size[1]).to(torch.float64) + self.anchor_offset) * stride  # (W_l,)
        grid_x = (shifts_x[None, :] + shifts_y[:, None] * 0).reshape(-1)  # (H_l, W_l) -> (H_l*W_l,)
        grid_y = (shifts_y[:, None] + shifts_x[None, :] * 0).reshape(-1)  # (H_l, W_l) -> (H_l*W_l,)
        shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)  # (H_l*W_l, 4)
        base = getattr(self, f"base_anchors_{level}")  # (A, 4)
        # (H_l*W_l, 1, 4) + (1, A, 4) -> (H_l*W_l, A, 4) -> (H_l*W_l*A, 4)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4).to(torch.float32)

    def propose(self, features: List[Tensor], height: Tensor, width: Tensor) -> Tuple[Tensor, Tensor]:
        """features: L x Tensor[1, C, H_l, W_l] -> (proposals Tensor[R, 4], their level int64[R]) by
        decreasing objectness, equal objectness by increasing candidate index (RegionProposalNetwork.propose's)."""
        logits, deltas = self.rpn_head(features)
        boxes, scores, levels = [], [], []
        for level, (lg, dl) in enumerate(zip(logits, deltas)):
            a = self.num_anchors
            lg = lg.permute(0, 2, 3, 1).reshape(-1).float()  # (1, A, H, W) -> (H*W*A,)
            # (1, A*4, H, W) -> (A, 4, H, W) -> (H, W, A, 4) -> (H*W*A, 4)
            dl = dl.reshape(a, 4, dl.shape[-2], dl.shape[-1]).permute(2, 3, 0, 1).reshape(-1, 4).float()
            k = torch.minimum(torch._shape_as_tensor(lg)[0], torch.tensor(self.pre_nms_top_n))
            top_logits, top = topk_stable(lg, k)  # equal logits by increasing anchor index, as the eager RPN
            anchors = self.level_anchors(level, features[level])
            boxes.append(self.rpn_coder.decode(dl[top], anchors[top]))
            scores.append(top_logits.sigmoid())
            levels.append(torch.full_like(top, level))
        b = clip_boxes(torch.cat(boxes), (height, width))
        s, lv = torch.cat(scores), torch.cat(levels)
        idx = remove_small_boxes(b, self.rpn_min_size)
        valid = torch.isfinite(s[idx]) & torch.isfinite(b[idx]).all(dim=1)  # as RegionProposalNetwork.propose
        if self.rpn_score_thresh > 0:
            valid = valid & (s[idx] >= self.rpn_score_thresh)
        idx = idx[torch.where(valid)[0]]
        b, s, lv = b[idx], s[idx], lv[idx]
        kept = _per_group_nms(b, s, lv, len(logits), self.rpn_nms_thresh)[: self.post_nms_top_n]
        return b[kept], lv[kept]

    # ------------------------------------------------------------------ second stage
    def pool(self, features: List[Tensor], proposals: Tensor) -> Tensor:
        """RoIAlign of each proposal on its level: -> Tensor[R, C, S, S], row r pooled from proposal r.

        The proposals are pooled level by level, then the rows are put back in the proposals' order:
        the RoI head's candidates are then in the eager model's order, which decides which of two
        equal scores NMS visits first."""
        maps = [features[i] for i in self.pool_levels]
        if self.level_mapper is None:
            targets = torch.zeros_like(proposals[:, 0], dtype=torch.int64)
        else:
            targets = self.level_mapper([proposals])  # (R,) in [0, len(maps))
        pooled, pooled_rows = [], []
        for level, feature in enumerate(maps):
            rows = torch.where(targets == level)[0]
            rois = torch.cat((torch.zeros_like(proposals[rows, :1]), proposals[rows]), dim=1)  # (R_l, 5)
            pooled.append(tv_roi_align(feature, rois, self.pool_output_size, self.pool_scales[level],
                                       self.sampling_ratio, self.aligned))
            pooled_rows.append(rows)
        return torch.cat(pooled)[torch.argsort(torch.cat(pooled_rows))]  # distinct rows: a plain sort is exact

    def detect(self, logits: Tensor, deltas: Tensor, proposals: Tensor, height: Tensor,
               width: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """logits: Tensor[R, K+1], deltas: Tensor[R, 4K or 4], proposals: Tensor[R, 4] -> D boxes,
        scores, labels in the resized image's pixels (RoIHead.postprocess's steps)."""
        num_classes = logits.shape[1] - 1
        scores = F.softmax(logits.float(), dim=-1)[:, 1:]  # (R, K+1) -> (R, K)
        deltas = deltas.float().reshape(deltas.shape[0], -1, 4)  # (R, 4K) -> (R, K, 4)  (or (R, 1, 4))
        rows, cols = torch.where(scores > self.score_thresh)  # row-major, as torchvision flattens (R, K)
        s = scores[rows, cols]
        d = deltas[rows, cols] if deltas.shape[1] == num_classes else deltas[rows, torch.zeros_like(cols)]
        boxes = clip_boxes(self.roi_coder.decode(d, proposals[rows]), (height, width))
        idx = remove_small_boxes(boxes, self.roi_min_size)
        boxes, s, labels = boxes[idx], s[idx], cols[idx] + 1
        kept = _offset_nms(boxes, s, labels, self.nms_thresh)[: self.detections_per_img]
        return boxes[kept], s[kept], labels[kept]

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """image: uint8[H, W, 3] RGB -> (boxes float32[D, 4] xyxy in the image's pixels, scores float32[D]
        by decreasing score, labels int64[D] in 1..K)."""
        x, new, orig = self.resize_and_normalise(image)
        height, width = new[0].to(torch.float32), new[1].to(torch.float32)
        features = list(self.backbone(x).values())
        proposals, _ = self.propose(features, height, width)
        pooled = self.pool(features, proposals)
        logits, deltas = self.predictor(self.box_head(pooled))
        boxes, scores, labels = self.detect(logits, deltas, proposals, height, width)
        # Detector.rescale: the ratio computed in double, applied in float32, then clipped to the image.
        ratio = (orig.to(torch.float64) / new.to(torch.float64)).to(torch.float32)  # (H / h, W / w)
        boxes = boxes * torch.stack((ratio[1], ratio[0], ratio[1], ratio[0]))
        boxes = clip_boxes(boxes, (orig[0].to(torch.float32), orig[1].to(torch.float32)))
        return boxes, scores, labels

