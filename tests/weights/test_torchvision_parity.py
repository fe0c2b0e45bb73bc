"""detkit with torchvision's weights gives torchvision's detections: v1, v2 and the R18-FPN P1 architecture.

Random weights written by torchvision's own builders (BatchNorm statistics and the classifier scaled so
that there are many detections to compare); the images are resized to 320 / 512 on both sides to keep the
tests fast, with sizes whose P6 level is rounded up (torchvision's stride quirk).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.image_list import ImageList

from detkit.config import Config, replace_values
from detkit.modeling.anchors import AnchorGenerator, shapes_from_sizes_ratios
from detkit.modeling.detector import build_detector
from detkit.weights.torchvision_detection import (
    categories_to_classes,
    detection_architecture,
    is_torchvision_detection,
    to_detkit_state,
    torchvision_settings,
)

MIN_SIZE, MAX_SIZE = 320, 512


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial norms, and a classifier scaled so that random weights detect many objects."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
        model.roi_heads.box_predictor.cls_score.weight.mul_(30)
        model.rpn.head.cls_logits.weight.mul_(10)
    return model.eval()


def _torchvision(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "v1":
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=MIN_SIZE, max_size=MAX_SIZE)
    elif kind == "v2":
        model = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, min_size=MIN_SIZE,
                                           max_size=MAX_SIZE)
    else:  # the P1 reference (scripts/train_torchvision_p1.py): R18-FPN, FrozenBatchNorm, 3 classes + background
        model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5),
                           num_classes=4, min_size=MIN_SIZE, max_size=MAX_SIZE)
    return _randomised(model)


def _detkit_from(state: dict) -> torch.nn.Module:
    arch = detection_architecture(state)
    num_classes = arch.pop("num_classes")
    values = {**torchvision_settings(), **arch, "data.test_min_size": MIN_SIZE, "data.max_size": MAX_SIZE}
    cfg = replace_values(Config(), values)
    model = build_detector(cfg, num_classes, log=lambda *_: None)
    own = model.state_dict()
    mapped = {k: v for k, v in to_detkit_state(state).items() if k in own or not k.endswith("num_batches_tracked")}
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _images():
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((200, 300), (333, 250)):  # P6 rounded up on one axis in each
        img = rng.random((3, h, w), dtype=np.float32)
        # smooth random images: structure at several scales, so that proposals vary
        t = torch.from_numpy(img)[None]
        t = torch.nn.functional.avg_pool2d(t, 9, stride=1, padding=4)[0]
        out.append(t.clamp(0, 1).contiguous())
    return out


@pytest.mark.parametrize("kind", ["v1", "v2", "r18"])
def test_detections_equal_torchvision(kind):
    reference = _torchvision(kind)
    state = reference.state_dict()
    assert is_torchvision_detection(state)
    model = _detkit_from(state)
    images = _images()
    with torch.inference_mode():
        expected = reference(images)
        found = model(images)
    for exp, got in zip(expected, found):
        assert len(exp["boxes"]) > 10, "the test needs detections to compare"
        assert torch.equal(exp["labels"], got["labels"])
        assert torch.allclose(exp["boxes"], got["boxes"], atol=1e-2, rtol=0)
        assert torch.allclose(exp["scores"], got["scores"], atol=1e-4, rtol=0)


def test_old_key_names_map_like_new_ones():
    """torchvision < 0.13 files name the FPN and RPN convs without the Conv2dNormActivation index."""
    state = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    old = {}
    for key, value in state.items():
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        for block in ("inner_blocks", "layer_blocks"):
            for i in range(4):
                key = key.replace(f"backbone.fpn.{block}.{i}.0.", f"backbone.fpn.{block}.{i}.")
        old[key] = value
    assert old.keys() != state.keys()
    new_mapped, old_mapped = to_detkit_state(state), to_detkit_state(old)
    assert new_mapped.keys() == old_mapped.keys()
    assert all(torch.equal(new_mapped[k], old_mapped[k]) for k in new_mapped)
    assert new_mapped["roi_head.predictor.bbox_pred.weight"].shape[0] == 4 * 90  # no background rows


def test_architecture_read_from_the_tensors():
    v2 = detection_architecture(fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict())
    assert v2["model.backbone.depth"] == 50 and v2["model.rpn.head_convs"] == 2
    assert v2["model.roi_head.num_conv"] == 4 and v2["model.roi_head.num_fc"] == 1
    assert v2["model.backbone.fpn_norm"] == "bn" and v2["num_classes"] == 90
    v1 = detection_architecture(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(),
                                name="FasterRCNN_ResNet50_FPN_Weights.COCO_V1")
    assert v1["model.backbone.norm_eps"] == 0.0 and v1["model.roi_head.num_fc"] == 2
    assert v1["model.backbone.fpn_norm"] is False


@pytest.mark.parametrize("padded", [(800, 1088), (320, 480), (352, 256)])
def test_anchors_equal_torchvision_with_its_strides(padded):
    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), (0.5, 1.0, 2.0)
    reference = TVAnchorGenerator(sizes, (ratios,) * 5)
    feature_sizes = [(-(-padded[0] // s), -(-padded[1] // s)) for s in (4, 8, 16, 32, 64)]
    feature_maps = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    expected = reference(ImageList(torch.zeros(1, 3, *padded), [padded]), feature_maps)[0]
    ours = AnchorGenerator(shapes=shapes_from_sizes_ratios([[s] for s in (32, 64, 128, 256, 512)], ratios),
                           strides=[4, 8, 16, 32, 64], round_base=True, strides_from_size=True)
    assert torch.equal(torch.cat(ours(feature_sizes)), expected)


def test_coco_categories_keep_torchvision_numbering():
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    categories = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    classes = categories_to_classes(categories)
    assert len(classes) == 90 and classes[0] == "person" and classes[categories.index("dog") - 1] == "dog"


def test_export_names_the_torchvision_settings_it_does_not_compute():
    from detkit.deploy.export_graph import ExportableDetector

    cfg = replace_values(Config(), {**torchvision_settings(), "model.backbone.norm": "frozen_bn"})
    model = build_detector(cfg, 3, log=lambda *_: None).eval()
    with pytest.raises(ValueError) as info:
        ExportableDetector(model, min_size=800, max_size=1333)
    assert "data.test_resize=pipeline" in str(info.value)
    assert "model.anchors.strides_from_size=false" in str(info.value)
