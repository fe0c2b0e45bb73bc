"""torchvision's Faster R-CNN state dicts in detkit's layout, and the settings that reproduce its inference.

A torchvision detector (``fasterrcnn_resnet50_fpn`` v1, ``fasterrcnn_resnet50_fpn_v2``, or any
``FasterRCNN`` over ``resnet_fpn_backbone``) names its tensors so:

    backbone.body.*                      -> backbone.body.*            (the same ResNet names)
    backbone.fpn.{inner,layer}_blocks.i.0.* (old files: ...blocks.i.*) -> backbone.fpn.{inner,layer}_blocks.i.0.*
    backbone.fpn.{inner,layer}_blocks.i.1.* (v2: BatchNorm)            -> the same
    rpn.head.conv.0.0.* (old files: rpn.head.conv.*)                   -> rpn.head.conv.*
    rpn.head.conv.k.0.*, k >= 1 (v2: 2 convs)                          -> rpn.head.extra_convs.{k-1}.*
    rpn.head.cls_logits.*, rpn.head.bbox_pred.*                        -> the same
    roi_heads.box_head.fc6.*, fc7.* (v1 TwoMLPHead)                    -> roi_head.box_head.fcs.0.*, fcs.1.*
    roi_heads.box_head.i.{0,1}.* (v2 conv blocks), .j.* (v2 Linear)    -> roi_head.box_head.convs.i.*, fcs.*
    roi_heads.box_predictor.cls_score.*                                -> roi_head.predictor.cls_score.*
    roi_heads.box_predictor.bbox_pred.*  (K+1 classes x 4 rows)        -> roi_head.predictor.bbox_pred.* (K x 4:
                                                                          detkit has no background box row)

:func:`detection_architecture` reads the structure (depth, norms, head shapes, classes) from the tensors,
and :func:`torchvision_settings` gives the config values under which detkit's inference is
torchvision's (its transform, anchors, thresholds); a model loaded from torchvision weights uses them.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

from torch import Tensor

from detkit.errors import CheckpointError

__all__ = ["is_torchvision_detection", "to_detkit_state", "detection_architecture", "torchvision_settings",
           "categories_to_classes", "V1_EPS_ZERO_WEIGHTS"]

# torchvision's builders call overwrite_eps(model, 0.0) for these weights: their FrozenBatchNorm eps is 0.
V1_EPS_ZERO_WEIGHTS = ("FasterRCNN_ResNet50_FPN_Weights.COCO_V1",)

_FPN_OLD = re.compile(r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$")
_RPN_CONV = re.compile(r"^rpn\.head\.conv\.(\d+)\.0\.(weight|bias)$")
_BOX_SEQ = re.compile(r"^roi_heads\.box_head\.(\d+)\.(.+)$")


def is_torchvision_detection(state: Dict[str, Tensor]) -> bool:
    """Whether a state dict is a torchvision Faster R-CNN's (``backbone.body.*``, ``rpn.head.*``, ``roi_heads.*``)."""
    keys = list(state)
    return (any(k.startswith("backbone.body.") for k in keys) and any(k.startswith("rpn.head.") for k in keys)
            and any(k.startswith("roi_heads.box_predictor.") for k in keys))


def _box_head_layout(state: Dict[str, Tensor]) -> Dict[str, Dict[int, int]]:
    """v2's Sequential box head: {"convs": {seq index: conv i}, "fcs": {seq index: fc j}}."""
    conv_idx, fc_idx = set(), set()
    for key, value in state.items():
        m = _BOX_SEQ.match(key)
        if not m:
            continue
        idx, rest = int(m.group(1)), m.group(2)
        if rest == "0.weight" and value.dim() == 4:
            conv_idx.add(idx)
        elif rest == "weight" and value.dim() == 2:
            fc_idx.add(idx)
    return {"convs": {s: i for i, s in enumerate(sorted(conv_idx))},
            "fcs": {s: j for j, s in enumerate(sorted(fc_idx))}}


def to_detkit_state(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """A torchvision Faster R-CNN state dict -> the same tensors under detkit's Detector names.

    Old key names (torchvision < 0.13 FPN and RPN convs) and the v2 layout are accepted; the
    background rows (the first 4) of ``bbox_pred`` are dropped (detkit predicts boxes for the K classes).
    ``num_batches_tracked`` counters are kept where they exist (a model with FrozenBatchNorm ignores them).

    Raises:
        CheckpointError: a key of the detector's parts that this mapping does not know (so that
            nothing is silently dropped); the message names it.
    """
    layout = _box_head_layout(state)
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        new = _detkit_key(key, layout)
        if new is None:
            raise CheckpointError(f"torchvision state dict: no detkit counterpart for tensor '{key}' "
                                  f"{tuple(value.shape)} (a Faster R-CNN with another head?)")
        out[new] = value
    for name in ("roi_head.predictor.bbox_pred.weight", "roi_head.predictor.bbox_pred.bias"):
        cls_rows = out["roi_head.predictor.cls_score.weight"].shape[0]
        if name in out and out[name].shape[0] == 4 * cls_rows:  # K+1 classes x 4, background first
            out[name] = out[name][4:].clone()
    return out


def _detkit_key(key: str, layout: Dict[str, Dict[int, int]]) -> Optional[str]:
    if key.startswith("backbone.body."):
        return key
    if key.startswith("backbone.fpn."):
        m = _FPN_OLD.match(key)
        return f"backbone.fpn.{m.group(1)}.{m.group(2)}.0.{m.group(3)}" if m else key
    if key in ("rpn.head.conv.weight", "rpn.head.conv.bias"):
        return key
    m = _RPN_CONV.match(key)
    if m:
        k, what = int(m.group(1)), m.group(2)
        return f"rpn.head.conv.{what}" if k == 0 else f"rpn.head.extra_convs.{k - 1}.{what}"
    if key.startswith(("rpn.head.cls_logits.", "rpn.head.bbox_pred.")):
        return key
    for old, new in (("roi_heads.box_head.fc6.", "roi_head.box_head.fcs.0."),
                     ("roi_heads.box_head.fc7.", "roi_head.box_head.fcs.1."),
                     ("roi_heads.box_predictor.", "roi_head.predictor.")):
        if key.startswith(old):
            return new + key[len(old):]
    m = _BOX_SEQ.match(key)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        if idx in layout["convs"]:
            return f"roi_head.box_head.convs.{layout['convs'][idx]}.{rest}"
        if idx in layout["fcs"]:
            return f"roi_head.box_head.fcs.{layout['fcs'][idx]}.{rest}"
    return None


def _count_blocks(state: Dict[str, Tensor], stage: str) -> int:
    found = {int(k.split(".")[3]) for k in state if k.startswith(f"backbone.body.{stage}.")}
    return max(found) + 1 if found else 0


def detection_architecture(state: Dict[str, Tensor], *, name: Optional[str] = None) -> Dict[str, object]:
    """The detkit config values (dotted keys) of the architecture a torchvision detection state dict holds.

    Read from the tensors: ResNet depth (block type and count), the body's norm (BatchNorm counters
    present and no weights ``name``: ``bn``, else ``frozen_bn``), FPN channels and norm, RPN head
    convs, box head convs / FCs and their widths, the class count. ``name`` (a torchvision weights
    name) sets torchvision's FrozenBatchNorm eps of those weights (0 for v1 COCO). Returns e.g.
    ``{"model.backbone.depth": 50, ...}`` plus ``"num_classes"`` (K, without background).
    """
    bottleneck = "backbone.body.layer1.0.conv3.weight" in state
    blocks = tuple(_count_blocks(state, f"layer{i}") for i in range(1, 5))
    depths = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}
    if bottleneck:
        depths = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}
    if blocks not in depths:
        raise CheckpointError(f"torchvision state dict: a ResNet with {blocks} blocks per stage "
                              f"({'bottleneck' if bottleneck else 'basic'}) is not a depth detkit builds "
                              f"(18/34/50/101)")
    arch: Dict[str, object] = {"model.backbone.depth": depths[blocks], "model.backbone.features": "fpn"}
    # torchvision's pretrained detectors run a FrozenBatchNorm body; a file saved from a BatchNorm body
    # (batch counters present) is taken as trained with BatchNorm, unless it is named weights.
    batch_norm = "backbone.body.bn1.num_batches_tracked" in state and name is None
    arch["model.backbone.norm"] = "bn" if batch_norm else "frozen_bn"
    arch["model.backbone.norm_eps"] = 0.0 if name in V1_EPS_ZERO_WEIGHTS else 1e-5
    lateral = state.get("backbone.fpn.inner_blocks.0.0.weight", state.get("backbone.fpn.inner_blocks.0.weight"))
    if lateral is None:
        raise CheckpointError("torchvision state dict: no FPN (backbone.fpn.inner_blocks.0) found; detkit reads "
                              "torchvision detectors with a ResNet-FPN backbone")
    arch["model.backbone.fpn_channels"] = int(lateral.shape[0])
    arch["model.backbone.fpn_norm"] = "bn" if "backbone.fpn.inner_blocks.0.1.running_mean" in state else False
    rpn_convs = {int(m.group(1)) for k in state for m in [_RPN_CONV.match(k)] if m}
    arch["model.rpn.head_convs"] = max(len(rpn_convs), 1)
    layout = _box_head_layout(state)
    convs = sorted(layout["convs"])
    arch["model.roi_head.num_conv"] = len(convs)
    if convs:
        arch["model.roi_head.conv_dim"] = int(state[f"roi_heads.box_head.{convs[0]}.0.weight"].shape[0])
        has_bn = f"roi_heads.box_head.{convs[0]}.1.running_mean" in state
        has_norm = f"roi_heads.box_head.{convs[0]}.1.weight" in state
        arch["model.roi_head.conv_norm"] = "bn" if has_bn else ("gn" if has_norm else "none")
        fc_weights = [state[f"roi_heads.box_head.{s}.weight"] for s in sorted(layout["fcs"])]
    else:
        fc_weights = [state[k] for k in ("roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc7.weight")
                      if k in state]
    if not fc_weights:
        raise CheckpointError("torchvision state dict: its box head has no fully connected layer "
                              "(roi_heads.box_head.fc6 / a Linear after the convs)")
    arch["model.roi_head.num_fc"] = len(fc_weights)
    arch["model.roi_head.fc_dim"] = int(fc_weights[0].shape[0])
    arch["model.roi_head.fc_norm"] = "none"
    arch["model.roi_head.class_agnostic"] = False
    arch["num_classes"] = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0]) - 1
    return arch


def torchvision_settings(*, num_anchors: int = 3) -> Dict[str, object]:
    """The config values under which detkit's inference is torchvision's Faster R-CNN's (dotted keys).

    Its transform (ImageNet mean/std, normalise then float bilinear resize to 800 / 1333 inside the
    model, zero pad to 32), its anchors (sizes 32..512 one per level, ratios 0.5 / 1 / 2, base anchors
    rounded, centres at ``j * stride`` with strides = padded size // feature size), the RPN's per-level
    pre-NMS top 1000 / post-NMS 1000 at test (2000 / 2000 in training), NMS 0.7, the RoI head's
    sampling ratio 2, unaligned RoIAlign, score 0.05, NMS 0.5, 100 detections, and fp32 evaluation
    without test-time flips. ``num_anchors`` other than 3 leaves the anchors to the config.
    """
    settings: Dict[str, object] = {
        "model.pixel_mean": [0.485, 0.456, 0.406], "model.pixel_std": [0.229, 0.224, 0.225],
        "model.size_divisible": 32, "model.test_hflip": False, "model.test_scales": [1.0],
        "data.min_size": [800], "data.max_size": 1333, "data.test_min_size": 800, "data.test_resize": "model",
        "model.anchors.mode": "manual", "model.anchors.shapes": None, "model.anchors.offset": 0.0,
        "model.anchors.round_base": True, "model.anchors.strides_from_size": True,
        "model.rpn.pre_nms_top_n_train": 2000, "model.rpn.post_nms_top_n_train": 2000,
        "model.rpn.pre_nms_top_n_test": 1000, "model.rpn.post_nms_top_n_test": 1000,
        "model.rpn.nms_thresh": 0.7, "model.rpn.score_thresh": 0.0, "model.rpn.min_size": 1e-3,
        "model.rpn.box_weights": [1.0, 1.0, 1.0, 1.0],
        "model.roi_head.pool_size": 7, "model.roi_head.sampling_ratio": 2, "model.roi_head.aligned": False,
        "model.kernels": "torchvision",
        "model.roi_head.box_weights": [10.0, 10.0, 5.0, 5.0], "model.roi_head.score_thresh": 0.05,
        "model.roi_head.nms_thresh": 0.5, "model.roi_head.nms_method": "hard",
        "model.roi_head.detections_per_img": 100, "model.roi_head.min_size": 1e-2,
        "eval.precision": "fp32", "eval.fold_bn": False, "model.memory_format": "contiguous",
    }
    if num_anchors == 3:
        settings["model.anchors.sizes"] = [[32.0], [64.0], [128.0], [256.0], [512.0]]
        settings["model.anchors.ratios"] = [0.5, 1.0, 2.0]
    return settings


def categories_to_classes(categories: Sequence[str]) -> List[str]:
    """torchvision's ``meta["categories"]`` (background first) -> detkit's class list (label k -> classes[k-1]).

    COCO's 91 entries give 90 names: the 'N/A' placeholders of unused COCO ids are kept so that the
    labels keep torchvision's numbering (a reporter leaves them out of listed names).
    """
    names = list(categories)
    if names and names[0].strip().lower() in ("__background__", "background"):
        names = names[1:]
    return names
