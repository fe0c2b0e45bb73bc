"""A torchvision detector served by detkit: its weights, its architecture read from them, its inference settings.

    model, cfg, info = load_torchvision_detector("torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1")

The architecture (depth, norms, heads, class count) comes from the tensors
(:func:`detkit.weights.torchvision_detection.detection_architecture`); the inference settings are
torchvision's (:func:`~detkit.weights.torchvision_detection.torchvision_settings`: its transform, anchors,
thresholds, RoIAlign kernel, fp32), so the detections are torchvision's. All of it is in the returned
config, where overrides can change it. Class names: the weights' categories (COCO's 90 slots with
torchvision's 'N/A' placeholders kept, so that labels are COCO category ids), else ``class_1`` ...
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from detkit.config import Config, apply_overrides, config_from_dict, config_to_dict, replace_values
from detkit.errors import CheckpointError, ConfigError
from detkit.modeling.detector import build_detector
from detkit.weights.checkpoint import load_weights
from detkit.weights.start import read_start_weights
from detkit.weights.torchvision_detection import torchvision_settings

__all__ = ["load_torchvision_detector", "PLACEHOLDER_CLASSES", "named_classes"]

# torchvision's name for the unused slots of COCO's 91 category ids.
PLACEHOLDER_CLASSES = ("N/A",)


def named_classes(classes: Sequence[str]) -> list:
    """The class names worth listing (the 'N/A' placeholders of unused COCO ids left out)."""
    return [c for c in classes if c not in PLACEHOLDER_CLASSES]


def load_torchvision_detector(spec: str, device: torch.device = torch.device("cpu"),
                              overrides: Optional[Sequence[str]] = None, *,
                              log: Callable[[str], None] = print) -> tuple:
    """Build and load the detector of torchvision weights (a ``torchvision:`` name or a state dict file).

    Returns:
        (model in eval mode on ``device``, its Config, a checkpoint-like dict with ``classes``,
        ``category_ids``, ``anchor_shapes``, ``config`` and ``source``), as
        :func:`detkit.weights.trained_model.load_trained_model` returns for detkit checkpoints.
    Raises:
        CheckpointError: the weights cannot be read, or are not a torchvision detector's.
    """
    start = read_start_weights(spec, log=log)
    if not start.source.startswith("torchvision") or not start.architecture:
        raise CheckpointError(f"'{spec}' holds {start.source.split(' ')[0]} weights without a config: load a detkit "
                              f"checkpoint (best.pt / last.pt) or torchvision detection weights")
    architecture = dict(start.architecture)
    num_classes = int(architecture.pop("num_classes"))
    num_anchors = int(start.state["rpn.head.cls_logits.weight"].shape[0])
    values = {**torchvision_settings(num_anchors=num_anchors), **architecture, "model.weights": spec}
    try:
        data = config_to_dict(replace_values(Config(), values))
        cfg = config_from_dict(apply_overrides(data, list(overrides or [])))
    except ConfigError as exc:
        raise ConfigError(f"{spec}: {exc}") from None
    classes = list(start.classes or [])
    if len(classes) != num_classes:
        if classes:
            log(f"warning: {start.source} names {len(classes)} classes but its classifier has {num_classes}; "
                f"using class_1 .. class_{num_classes}")
        classes = [f"class_{k}" for k in range(1, num_classes + 1)]
    model = build_detector(cfg, num_classes, log=lambda *_: None)
    own = model.state_dict()
    # A model with FrozenBatchNorm has no batch counters; files saved from BatchNorm models carry them.
    state = {k: v for k, v in start.state.items() if k in own or not k.endswith("num_batches_tracked")}
    load_weights(model, state, spec, what=f"the detector read from its tensors ({start.source})")
    listed = named_classes(classes)
    log(f"loaded {start.source}: ResNet-{cfg.model.backbone.depth}-FPN, {len(listed)} classes"
        + (f" ({num_classes - len(listed)} unused slots)" if len(listed) != num_classes else ""))
    info = {"classes": classes, "category_ids": list(range(1, num_classes + 1)),
            "anchor_shapes": model.rpn.anchor_generator.shapes_list(), "config": config_to_dict(cfg),
            "source": start.source}
    return model.to(device).eval(), cfg, info
