"""Export of a detector with torchvision v2's heads (conv box head, two RPN convs, a BatchNorm FPN): the
exported graph calls the heads' modules, so it computes what the eager model does, BatchNorm folded."""

import cv2
import pytest
import torch
from torch import nn

from detkit.config import load_config
from detkit.deploy.export import build_export_model, export_checkpoint
from detkit.deploy.export_verify import Tolerances, compare_detections
from detkit.deploy.exported_model import load_exported
from detkit.engine.trainer import Trainer

from .conftest import tiny_overrides
from .test_export import images_of_several_shapes

V2 = {"model.backbone.features": "fpn", "model.backbone.fpn_channels": 32, "model.backbone.norm": "frozen_bn",
      "model.backbone.norm_eps": 0.0, "model.backbone.fpn_norm": "bn",
      "model.anchors.sizes": [[8.0], [16.0], [32.0], [64.0], [128.0]], "model.anchors.ratios": [0.5, 1.0, 2.0],
      "model.rpn.head_convs": 2, "model.roi_head.num_conv": 4, "model.roi_head.conv_dim": 32,
      "model.roi_head.num_fc": 1, "data.min_size": [96], "data.max_size": 128,
      "train.max_iters": 6, "train.lr": 0.02}


@pytest.fixture(scope="module")
def v2_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2")
    Trainer(load_config(None, tiny_overrides(tmp, **V2)), quiet=True, log=lambda *_: None).run()
    return tmp / "run" / "best.pt"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_v2_heads_export_and_verify(v2_checkpoint, fmt, tmp_path):
    paths = []
    for i, img in enumerate(images_of_several_shapes()):
        paths.append(str(tmp_path / f"img{i}.png"))
        cv2.imwrite(paths[-1], cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    overrides = ["model.roi_head.score_thresh=0.01"]  # many detections to compare
    report = export_checkpoint(str(v2_checkpoint), fmt, str(output), overrides=overrides, verify_images=paths,
                               log=lambda *_: None)
    assert report["passed"], report["images"]

    predictor, graph, _ = build_export_model(str(v2_checkpoint), overrides=overrides, log=lambda *_: None)
    head = predictor.model.roi_head.box_head
    assert len(head.convs) == 4 and len(graph.rpn_head.extra_convs) == 1
    # eval.fold_bn: the conv head's and the FPN's BatchNorm are folded into their convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in predictor.model.modules())
    exported = load_exported(str(output))
    total = 0
    for img in images_of_several_shapes():
        eager = {k: torch.from_numpy(v) for k, v in predictor.predict(img).items() if k != "class_names"}
        c = compare_detections("img", eager, exported.detect(img), tol=Tolerances(box=1e-2, score=1e-4),
                               score_thresh=predictor.model.roi_head.score_thresh,
                               detections_per_img=predictor.model.roi_head.detections_per_img)
        assert c.passed, c.failures
        total += c.matched
    assert total > 0
