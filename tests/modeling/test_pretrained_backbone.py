"""model.backbone.weights by torchvision name: ImageNet ResNets of every depth into Backbone.body, a
torchvision detector's backbone, and the errors of a ResNet of another depth. Files are random-init
torchvision models saved under torchvision's file names in a temporary torch hub cache."""

from __future__ import annotations

import pytest
import torch
import torchvision

from detkit.config import Config
from detkit.errors import CheckpointError
from detkit.modeling.backbone import Backbone, load_backbone_weights
from detkit.modeling.detector import build_detector
from tests.test_hub import cache_weights, torch_home  # noqa: F401 (torch_home is a fixture)


def imagenet_resnet(depth: int) -> torch.nn.Module:
    """torchvision's resnet{depth}, random weights and random BN statistics (so the buffers count too)."""
    torch.manual_seed(depth)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_resnet_by_name_gives_torchvisions_outputs(torch_home, depth):  # noqa: F811
    net = imagenet_resnet(depth)
    cache_weights(f"ResNet{depth}_Weights.IMAGENET1K_V1", net.state_dict())
    backbone = Backbone(depth=depth, norm="bn", features="c5")
    lines = []
    report = load_backbone_weights(backbone, f"torchvision:ResNet{depth}_Weights.IMAGENET1K_V1", log=lines.append)
    assert report["ignored"] == ["body.fc.bias", "body.fc.weight"] and report["unexpected"] == []
    assert report["missing"] == []
    assert any(f"ResNet{depth}_Weights.IMAGENET1K_V1" in line and "classifier" in line for line in lines)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
        got = backbone.eval()(x)["c5"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch_home.downloads == []


def test_fpn_missing_from_an_imagenet_file_is_a_log_line(torch_home):  # noqa: F811
    cache_weights("ResNet18_Weights.IMAGENET1K_V1", imagenet_resnet(18).state_dict())
    lines = []
    report = load_backbone_weights(Backbone(depth=18, features="fpn"), "torchvision:ResNet18_Weights.DEFAULT",
                                   log=lines.append)
    assert report["missing"] and all(k.startswith("fpn.") for k in report["missing"])
    assert any("missing in the file" in line and "fpn.inner_blocks.0.0.weight" in line for line in lines)


def test_a_resnet50_into_depth_18_names_the_tensors_and_the_depth(torch_home):  # noqa: F811
    cache_weights("ResNet50_Weights.IMAGENET1K_V2", imagenet_resnet(50).state_dict())
    backbone = Backbone(depth=18, features="c5")
    init = backbone.body.conv1.weight.clone()
    with pytest.raises(CheckpointError) as info:
        load_backbone_weights(backbone, "torchvision:ResNet50_Weights.IMAGENET1K_V2", log=lambda s: None)
    message = str(info.value)
    assert message.startswith("model.backbone.weights: ") and "ResNet50_Weights.IMAGENET1K_V2" in message
    assert "body.layer1.0.conv1.weight: file [64, 64, 1, 1] vs model [64, 64, 3, 3]" in message, message
    assert "and " in message and "more" in message  # the first few named, the rest counted
    assert "set model.backbone.depth=50" in message and "\n" not in message
    assert torch.equal(backbone.body.conv1.weight, init)  # nothing half-loaded


def test_another_depth_of_the_same_shapes_is_an_error_too(torch_home):  # noqa: F811
    # ResNet-34's tensors all have ResNet-18's shapes; only the block counts differ.
    cache_weights("ResNet34_Weights.IMAGENET1K_V1", imagenet_resnet(34).state_dict())
    with pytest.raises(CheckpointError, match=r"ResNet-34 and the model is a ResNet-18: set model\.backbone\.depth=34"):
        load_backbone_weights(Backbone(depth=18, features="c4"), "torchvision:ResNet34_Weights.IMAGENET1K_V1",
                              log=lambda s: None)


def test_a_torchvision_detectors_backbone_and_fpn_load(torch_home):  # noqa: F811
    torch.manual_seed(0)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = tv.state_dict()
    # Files older than torchvision 0.13 name the FPN convs inner_blocks.i.weight (now inner_blocks.i.0.weight).
    state = {k.replace("fpn.inner_blocks.0.0.", "fpn.inner_blocks.0."): v for k, v in state.items()}
    cache_weights("FasterRCNN_ResNet50_FPN_Weights.COCO_V1", state)
    backbone = Backbone(depth=50, norm="frozen_bn", features="fpn")
    report = load_backbone_weights(backbone, "torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
                                   log=lambda s: None)
    assert report["missing"] == [] and report["unexpected"] == []
    own = backbone.state_dict()
    for key, value in tv.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):  # FrozenBatchNorm2d has none
            assert torch.equal(own[key], value), key


def test_build_detector_takes_a_name(torch_home):  # noqa: F811
    net = imagenet_resnet(18)
    cache_weights("ResNet18_Weights.IMAGENET1K_V1", net.state_dict())
    cfg = Config()
    cfg.model.backbone.weights = "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    lines = []
    model = build_detector(cfg, 3, log=lines.append)
    assert torch.equal(model.backbone.body.layer2[1].conv1.weight, net.layer2[1].conv1.weight)
    assert any("ResNet18_Weights.IMAGENET1K_V1" in line for line in lines)
