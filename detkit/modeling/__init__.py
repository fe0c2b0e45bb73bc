"""detkit.modeling: the detector's components, as ``nn.Module`` s and plain classes.

    backbone.py   Backbone (ResNet + BatchNorm/GroupNorm, optional FPN), load_backbone_weights
    anchors.py    AnchorGenerator (per-level shapes tiled over the feature maps)
    assigner.py   MaxIoUAssigner (max-IoU matching with torchvision's low-quality rule)
    sampler.py    BalancedSampler (positive / negative sampling) and its seeded generators
    codec.py      BoxCoder (box <-> offset encoding)
    rpn.py        RPNHead, RegionProposalNetwork
    roi_head.py   MultiLevelRoIAlign, FCHead, ConvFCHead, BoxPredictor, RoIHead
    cascade_head.py  CascadeRoIHead (Cascade R-CNN: RoIHead stages at rising IoU thresholds)
    detector.py   Detector and build_detector(cfg, num_classes), which wires them from a config

Names are imported on first use (``from detkit.modeling import RoIHead``), so importing one
module of the package does not import the others.
"""

import importlib

_LAZY = {
    "Backbone": "backbone", "load_backbone_weights": "backbone",
    "AnchorGenerator": "anchors", "shapes_from_sizes_ratios": "anchors", "strides_for_features": "anchors",
    "MaxIoUAssigner": "assigner", "BalancedSampler": "sampler", "SamplingRNG": "sampler", "BoxCoder": "codec",
    "RPNHead": "rpn", "RegionProposalNetwork": "rpn",
    "MultiLevelRoIAlign": "roi_head", "FCHead": "roi_head", "ConvFCHead": "roi_head",
    "BoxPredictor": "roi_head", "RoIHead": "roi_head", "CascadeRoIHead": "cascade_head",
    "Detector": "detector", "build_detector": "detector",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'detkit.modeling' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"detkit.modeling.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
