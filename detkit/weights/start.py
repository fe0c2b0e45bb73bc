"""Where a fine-tuning run starts: ``model.weights`` read, and transferred into the built detector.

    start = read_start_weights("torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1", log=print)
    report = apply_start_weights(model, cfg, classes, log=print)   # after build_detector, not on a resume

``model.weights`` is one of

    a detkit checkpoint                 a dict with "model" (a Detector state dict) and "classes"
    a torchvision detection state dict  fasterrcnn_resnet50_fpn(...).state_dict() saved to a file
    a torchvision weights name          torchvision:<Enum>.<MEMBER>, from torch hub's cache (detkit.hub)

and comes out as a :class:`StartWeights`: the tensors in detkit's layout, the class names when the
file knows them (a detkit checkpoint's "classes"; torchvision's categories of a named weights file),
a description for the report, and the architecture the tensors were trained as (dotted config values).
:func:`apply_start_weights` then copies what fits (:func:`detkit.weights.transfer.transfer_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from detkit.errors import CheckpointError
from detkit.hub import read_state_dict, resolve_weights, weights_name_for_file
from detkit.safe_load import load_torch_file
from detkit.weights.torchvision_detection import (
    categories_to_classes,
    detection_architecture,
    is_torchvision_detection,
    to_detkit_state,
)
from detkit.weights.transfer import TransferReport, transfer_weights

__all__ = ["StartWeights", "read_start_weights", "apply_start_weights", "frozen_layers_warning", "KEY"]

KEY = "model.weights"
DETKIT_PREFIXES = ("backbone.", "rpn.", "roi_head.")
# The config values of a detkit checkpoint that decide its tensors' names and shapes.
_ARCHITECTURE_KEYS = (
    "model.backbone.depth", "model.backbone.features", "model.backbone.fpn_channels", "model.backbone.fpn_norm",
    "model.backbone.norm", "model.rpn.head_convs", "model.roi_head.num_conv", "model.roi_head.conv_dim",
    "model.roi_head.conv_norm", "model.roi_head.num_fc", "model.roi_head.fc_dim", "model.roi_head.fc_norm",
    "model.roi_head.class_agnostic",
)
# Values that may differ between the weights and the run without changing a tensor's shape.
_SHAPE_NEUTRAL = {"model.backbone.norm", "model.backbone.norm_eps"}


@dataclass
class StartWeights:
    """``model.weights`` read: ``state`` in detkit's Detector layout; ``classes`` (label k ->
    classes[k-1]) or None when the file names none; ``source`` names it in reports; ``architecture``:
    dotted config values of the model the tensors come from (plus ``num_classes``), or None."""

    state: Dict[str, torch.Tensor]
    classes: Optional[List[str]]
    source: str
    architecture: Optional[Dict[str, object]]


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()))


def _strip_module(state: dict) -> dict:
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_name_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(c, str) for c in value)


def _torchvision_classes(name: Optional[str], categories: Optional[List[str]]) -> Optional[List[str]]:
    """Class names of torchvision weights: the resolved categories, else those of the weights ``name``."""
    if not categories and name:
        try:
            from torchvision.models import get_weight

            categories = get_weight(name).meta.get("categories")
        except (ValueError, KeyError, AttributeError):
            categories = None
    return categories_to_classes(categories) if categories else None


def _checkpoint_architecture(ckpt: dict) -> Optional[Dict[str, object]]:
    config = ckpt.get("config")
    if not isinstance(config, dict):
        return None
    arch: Dict[str, object] = {}
    for dotted in _ARCHITECTURE_KEYS:
        node = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            arch[dotted] = node
    if isinstance(ckpt.get("classes"), list):
        arch["num_classes"] = len(ckpt["classes"])
    return arch


def read_start_weights(spec: str, *, log: Callable[[str], None] = print) -> StartWeights:
    """Read ``model.weights`` (a path or a ``torchvision:`` name) into a :class:`StartWeights`.

    Raises:
        CheckpointError: the file is missing (offline: where to put it), unreadable, or holds no
            detector state dict (a ResNet classifier's: use model.backbone.weights for those).
        ConfigError: a ``torchvision:`` name torchvision does not have.
    """
    resolved = resolve_weights(spec, key=KEY, log=log)
    path = resolved.path
    try:
        obj = load_torch_file(path, KEY)
    except CheckpointError:
        read_state_dict(path, key=KEY)  # its message says more about a file of pickled objects
        raise
    checkpoint = obj if isinstance(obj, dict) and _is_state_dict(obj.get("model")) else None
    if checkpoint is not None:
        state = checkpoint["model"]
    else:
        state = obj if _is_state_dict(obj) else read_state_dict(path, key=KEY)  # other wrappers, or the error
    state = _strip_module(state)

    if is_torchvision_detection(state):
        name = resolved.name or weights_name_for_file(path)
        classes = _torchvision_classes(name, resolved.categories)
        if classes is None and checkpoint is not None and _is_name_list(checkpoint.get("classes")):
            classes = list(checkpoint["classes"])  # a wrapper that names them (scripts/train_torchvision_p1.py)
        architecture = detection_architecture(state, name=name)
        source = f"torchvision {name}" if name else f"torchvision detection weights '{path}'"
        return StartWeights(to_detkit_state(state), classes, source, architecture)
    if any(k.startswith(DETKIT_PREFIXES) for k in state) and not any(k.startswith("roi_heads.") for k in state):
        classes = checkpoint.get("classes") if checkpoint is not None else None
        if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise CheckpointError(f"{KEY} '{path}': its 'classes' entry is not a list of names: {classes!r}")
        kind = "detkit checkpoint" if checkpoint is not None and "classes" in checkpoint else "detkit weights"
        return StartWeights(state, classes, f"{kind} '{spec}'",
                            _checkpoint_architecture(checkpoint) if checkpoint is not None else None)
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        raise CheckpointError(f"{KEY} '{path}' is a ResNet (classification) state dict, not a detector's: start "
                              f"the backbone from it with model.backbone.weights={spec} instead")
    examples = ", ".join(list(state)[:3])
    raise CheckpointError(f"{KEY} '{path}' is neither a detkit checkpoint nor a torchvision detection state dict "
                          f"(its keys: {examples}, ...); expected detkit's backbone./rpn./roi_head. names or "
                          f"torchvision's backbone.body./rpn.head./roi_heads. names")


def architecture_differences(architecture: Optional[Dict[str, object]], cfg) -> List[str]:
    """``key=value (the config: other)`` for each shape-deciding value where the weights differ from ``cfg``."""
    from detkit.config import config_to_dict

    if not architecture:
        return []
    data = config_to_dict(cfg)
    found = []
    for dotted, value in architecture.items():
        if dotted in _SHAPE_NEUTRAL or "." not in dotted:
            continue
        node = data
        for part in dotted.split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError and node != value:
            found.append(f"{dotted}={value} (the config: {node})")
    return found


def apply_start_weights(model: torch.nn.Module, cfg, classes: List[str], *,
                        log: Callable[[str], None] = print) -> TransferReport:
    """Read ``cfg.model.weights`` and transfer it into ``model`` (just built, for the run's ``classes``),
    matching classes by name through ``cfg.model.class_map``; logs the report and returns it.

    Raises:
        CheckpointError: the weights cannot be read, or their backbone is another one (the values
            where the weights' architecture differs from the config are named).
    """
    start = read_start_weights(cfg.model.weights, log=log)
    try:
        report = transfer_weights(model, start.state, source_classes=start.classes, target_classes=classes,
                                  class_map=cfg.model.class_map, source=start.source)
    except CheckpointError as exc:
        differences = architecture_differences(start.architecture, cfg)
        if not differences:
            raise
        raise CheckpointError(f"{exc}. The weights were trained as {', '.join(differences)}") from None
    for line in report.text().splitlines():
        log(line)
    differences = architecture_differences(start.architecture, cfg)
    if differences and report.fresh:
        log(f"  the weights were trained as {', '.join(differences)}")
    return report


def frozen_layers_warning(cfg) -> Optional[str]:
    """A warning when the backbone freezes layers (frozen_bn, freeze_at > 0) that no pretrained weights
    fill: they would stay at their random initialisation (torchvision issues #2164, #5443). None if fine."""
    bb = cfg.model.backbone
    if cfg.model.weights or bb.weights:
        return None
    frozen = [text for text, on in ((f"model.backbone.norm = {bb.norm}", bb.norm == "frozen_bn"),
                                    (f"model.backbone.freeze_at = {bb.freeze_at}", bool(bb.freeze_at))) if on]
    if not frozen:
        return None
    return (f"warning: {' and '.join(frozen)} without pretrained weights (model.weights, model.backbone.weights): "
            f"the frozen layers keep their random initialisation; use norm bn and freeze_at 0 from scratch")
