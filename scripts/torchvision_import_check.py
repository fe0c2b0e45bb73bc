"""Import torchvision detection weights into detkit and check that both score the same on a data set.

    python -m scripts.torchvision_import_check --weights runs/tv_p1/last.pt --config configs/bccd_r18_fpn.yaml \
        [--output import_check.json] [key=value ...]

``--weights``: a torchvision Faster R-CNN state dict file (``scripts/train_torchvision_p1.py``'s last.pt,
a ``fasterrcnn_resnet50_fpn`` file) or a ``torchvision:`` name. ``--config``: the data set to score on
(its validation split) and the test resize (``data.test_min_size`` / ``max_size``).

Both models see the same images at their original size, from detkit's loader: torchvision's detector
with its own transform, detkit's as ``detkit.load_model`` builds it (the architecture read from the
tensors, torchvision's inference settings). Both detection sets are scored by detkit's COCO
evaluation. Printed: both mAPs, their difference, and how many images have the same detections
(count and classes equal, boxes within 1e-2 px, scores within 1e-4).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List

import torch
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from detkit.config import apply_overrides, config_from_dict, config_to_dict, load_config
from detkit.data.formats import build_dataset
from detkit.data.loader import build_loader
from detkit.data.transforms import test_min_size
from detkit.evaluation.evaluator import evaluate_detections
from detkit.hub import read_state_dict, resolve_weights
from detkit.weights.trained_model import load_trained_model, prepare_inference

BOX_TOL, SCORE_TOL = 1e-2, 1e-4


def torchvision_reference(state: Dict[str, torch.Tensor], cfg, min_size: int, max_size: int) -> FasterRCNN:
    """torchvision's own detector for the architecture detkit read from ``state`` (cfg: the import's config)."""
    bb, head = cfg.model.backbone, cfg.model.roi_head
    num_classes = int(state["roi_heads.box_predictor.cls_score.weight"].shape[0])  # with background
    sizes = dict(num_classes=num_classes, min_size=min_size, max_size=max_size, weights=None, weights_backbone=None)
    if head.num_conv:  # v2: conv box head, 2-conv RPN head, BatchNorm FPN
        model = fasterrcnn_resnet50_fpn_v2(**sizes)
    elif bb.depth == 50:
        model = fasterrcnn_resnet50_fpn(**sizes, trainable_backbone_layers=5)
    else:
        norm = FrozenBatchNorm2d if bb.norm == "frozen_bn" else torch.nn.BatchNorm2d
        backbone = resnet_fpn_backbone(backbone_name=f"resnet{bb.depth}", weights=None, trainable_layers=5,
                                       norm_layer=norm)
        model = FasterRCNN(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size)
    for module in model.modules():  # the eps detkit took for these weights (0 for torchvision's v1 COCO)
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = bb.norm_eps
    model.load_state_dict(state, strict=False)
    return model.eval()


def same_detections(a: dict, b: dict) -> bool:
    if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
        return False
    return bool((a["boxes"] - b["boxes"]).abs().le(BOX_TOL).all()
                and (a["scores"] - b["scores"]).abs().le(SCORE_TOL).all())


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", required=True, help="the data set (validation split) and its test resize")
    parser.add_argument("--output", default=None, help="write the figures to this JSON file")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    data_cfg = load_config(args.config, list(args.overrides))
    short, longest = test_min_size(data_cfg.data), data_cfg.data.max_size
    model, cfg, info = load_trained_model(args.weights, overrides=[f"data.test_min_size={short}",
                                                                     f"data.max_size={longest}"])
    # The import's model settings with the data set of --config (kept at its size: the model resizes).
    merged = config_to_dict(cfg)
    merged["data"] = config_to_dict(data_cfg)["data"]
    cfg = config_from_dict(apply_overrides(merged, ["data.test_resize=model", f"data.test_min_size={short}"]))
    dataset = build_dataset(cfg, "val", classes=info["classes"])
    prepare_inference(model, cfg, torch.device("cpu"))  # torchvision's settings: fp32, BatchNorm not folded

    state = read_state_dict(resolve_weights(args.weights, key="--weights").path, key="--weights")
    reference = torchvision_reference(state, cfg, short, longest)
    loader = build_loader(cfg, "val", dataset=dataset, batch_size=1, shuffle=False)
    theirs, mine = {}, {}
    with torch.inference_mode():
        for images, targets in loader:
            image_id = int(targets[0]["image_id"])
            theirs[image_id] = reference(images)[0]
            mine[image_id] = model(images)[0]
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    order = [int(a["image_id"]) for a in annotations]
    metrics, _ = evaluate_detections(annotations, [mine[i] for i in order], dataset.classes,
                                     dataset.category_ids, backend=cfg.eval.backend)
    tv_metrics, _ = evaluate_detections(annotations, [theirs[i] for i in order], dataset.classes,
                                        dataset.category_ids, backend=cfg.eval.backend)
    matched = sum(same_detections(theirs[i], mine[i]) for i in order)
    figures = {"weights": args.weights, "images": len(order), "detkit_mAP": metrics["coco"]["mAP"],
               "torchvision_mAP": tv_metrics["coco"]["mAP"], "detkit_AP50": metrics["coco"]["AP50"],
               "torchvision_AP50": tv_metrics["coco"]["AP50"], "images_with_same_detections": matched,
               "detections": sum(len(theirs[i]["boxes"]) for i in order)}
    figures["mAP_difference"] = abs(figures["detkit_mAP"] - figures["torchvision_mAP"])
    print(json.dumps(figures, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(figures, f, indent=2)
    return 0 if figures["mAP_difference"] <= 0.002 else 1


if __name__ == "__main__":
    sys.exit(main())
