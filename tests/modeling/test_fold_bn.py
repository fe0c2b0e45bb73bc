"""Folding BatchNorm into convolutions: the folded model computes what the unfolded one does."""

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.modeling.detector import build_detector
from detkit.modeling.fold_bn import fold_batch_norm

from .test_detector import K, light_config, synthetic_images


def _randomise_statistics(model, seed=0):
    """Non-trivial statistics and affine parameters, so that a wrong fold cannot pass as identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("overrides", [
    {"features": "fpn", "fpn_norm": True, "memory_format": "channels_last"},
    {"features": "fpn", "fpn_norm": False, "memory_format": "contiguous"},
    {"features": "c4", "norm": "frozen_bn", "memory_format": "contiguous"},
    # torchvision's fasterrcnn_resnet50_fpn_v2 layout: frozen body, BatchNorm FPN and conv box head
    {"features": "fpn", "norm": "frozen_bn", "norm_eps": 0.0, "fpn_norm": "bn", "num_conv": 4, "head_convs": 2,
     "memory_format": "channels_last"},
    {"features": "c4", "num_conv": 2, "memory_format": "contiguous"},
])
def test_folded_detector_equals_unfolded(overrides):
    cfg = light_config(overrides["features"])
    cfg.model.backbone.fpn_norm = overrides.get("fpn_norm", False)
    cfg.model.backbone.norm = overrides.get("norm", "bn")
    cfg.model.backbone.norm_eps = overrides.get("norm_eps", 1e-5)
    cfg.model.rpn.head_convs = overrides.get("head_convs", 1)
    cfg.model.roi_head.num_conv = overrides.get("num_conv", 0)
    cfg.model.roi_head.conv_dim = 32
    cfg.model.memory_format = overrides["memory_format"]
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=K, log=lambda *_: None)
    _randomise_statistics(model)
    model.eval()
    folded = copy.deepcopy(model)
    norms = _count(model, (nn.BatchNorm2d, FrozenBatchNorm2d))
    assert fold_batch_norm(folded) == norms > 0
    assert _count(folded, (nn.BatchNorm2d, FrozenBatchNorm2d)) == 0
    if cfg.model.roi_head.num_conv:  # the conv head's convs took their BatchNorm's shift as a bias
        assert all(block[0].bias is not None and isinstance(block[1], nn.Identity)
                   for block in folded.roi_head.box_head.convs)
    images, _ = synthetic_images(2, size=128, seed=1)
    with torch.no_grad():
        fa = model.backbone(model.preprocess(images)[0])
        fb = folded.backbone(folded.preprocess(images)[0])
        da, db = model(images), folded(images)
    for name in fa:  # float32 rounding of a different operation order, relative to the features' scale
        scale = float(fa[name].abs().max())
        torch.testing.assert_close(fb[name], fa[name], rtol=0, atol=1e-5 * scale, msg=name)
    for a, b in zip(da, db):
        assert a["boxes"].shape == b["boxes"].shape
        torch.testing.assert_close(b["boxes"], a["boxes"], rtol=0, atol=1e-2)
        torch.testing.assert_close(b["scores"], a["scores"], rtol=0, atol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


def test_fold_keeps_memory_format_and_a_conv_bias():
    conv = nn.Conv2d(3, 8, 3, bias=True).to(memory_format=torch.channels_last)
    block = nn.Sequential(conv, nn.BatchNorm2d(8)).eval()
    _randomise_statistics(block)
    x = torch.randn(2, 3, 9, 9)
    expected = block(x)
    assert fold_batch_norm(block) == 1
    assert isinstance(block[1], nn.Identity)
    assert block[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_fold_refuses_training_mode():
    block = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(block)


def test_group_norm_is_left_alone():
    block = nn.Sequential(nn.Conv2d(3, 32, 1), nn.GroupNorm(8, 32)).eval()
    assert fold_batch_norm(block) == 0 and isinstance(block[1], nn.GroupNorm)
