"""torchvision's fasterrcnn_resnet50_fpn_v2 as detkit options: the conv box head (model.roi_head.num_conv),
the deeper RPN head (model.rpn.head_convs), a named FPN norm (model.backbone.fpn_norm = bn) and the body's
norm eps (model.backbone.norm_eps). Key names, equality with torchvision's modules under a key rename, and
that the defaults build what they built before."""

import glob
import os

import pytest
import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
from torchvision.ops import FrozenBatchNorm2d

from detkit.config import load_config
from detkit.modeling.backbone import Backbone
from detkit.modeling.detector import build_detector
from detkit.modeling.roi_head import ConvFCHead, FCHead
from detkit.modeling.rpn import RPNHead

from .test_detector import K, light_config, synthetic_images

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tv_v2():
    """torchvision's v2 Faster R-CNN, randomly initialised, every BatchNorm with non-trivial statistics."""
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).eval()
    _randomise_norms(model)
    return model


def _randomise_norms(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def _renamed(state, renames):
    """state's entries under the first matching (old prefix -> new prefix) of ``renames``; others dropped."""
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
    return out


# --------------------------------------------------------------------------- key names
@pytest.mark.parametrize("conv_norm, norm_keys", [
    ("bn", {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}),
    ("gn", {"weight", "bias"}),
    ("none", set()),
])
def test_conv_head_key_names(conv_norm, norm_keys):
    head = ConvFCHead(in_channels=16, pool_size=7, num_conv=4, conv_dim=32, conv_norm=conv_norm, num_fc=1, fc_dim=64)
    expected = {"fcs.0.weight", "fcs.0.bias"}
    for i in range(4):
        expected.add(f"convs.{i}.0.weight")
        if conv_norm == "none":
            expected.add(f"convs.{i}.0.bias")
        expected |= {f"convs.{i}.1.{name}" for name in norm_keys}
    assert set(head.state_dict()) == expected
    assert head(torch.randn(3, 16, 7, 7)).shape == (3, 64)
    norm_type = {"bn": nn.BatchNorm2d, "gn": nn.GroupNorm, "none": type(None)}[conv_norm]
    assert all(isinstance(block[1], norm_type) or (conv_norm == "none" and isinstance(block[1], nn.ReLU))
               for block in head.convs)


def test_conv_head_init_as_torchvision():
    torch.manual_seed(0)
    head = ConvFCHead(in_channels=64, pool_size=7, num_conv=2, conv_dim=64, conv_norm="none", num_fc=1, fc_dim=32)
    for block in head.convs:  # Kaiming normal, fan-out: std = sqrt(2 / (out * 3 * 3))
        expected = (2.0 / (64 * 9)) ** 0.5
        assert abs(block[0].weight.std().item() - expected) < 0.1 * expected
        assert torch.all(block[0].bias == 0)


def test_fc_norm_still_applies_after_the_convs():
    head = ConvFCHead(in_channels=8, pool_size=7, num_conv=1, conv_dim=32, num_fc=2, fc_dim=64, norm="ln")
    assert len(head.norms) == 2 and all(isinstance(n, nn.LayerNorm) for n in head.norms)
    assert not any(fc.bias is not None for fc in head.fcs)
    assert head.fcs[0].in_features == 32 * 7 * 7


def test_rpn_head_extra_conv_keys_and_default_unchanged():
    one = RPNHead(in_channels=8, num_anchors=3)
    assert set(one.state_dict()) == {f"{m}.{p}" for m in ("conv", "cls_logits", "bbox_pred")
                                     for p in ("weight", "bias")}
    two = RPNHead(in_channels=8, num_anchors=3, num_convs=3)
    assert set(two.state_dict()) - set(one.state_dict()) == {f"extra_convs.{k}.{p}" for k in (0, 1)
                                                              for p in ("weight", "bias")}
    torch.manual_seed(0)
    a = RPNHead(in_channels=8, num_anchors=3)
    torch.manual_seed(0)
    b = RPNHead(in_channels=8, num_anchors=3, num_convs=1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    with pytest.raises(ValueError, match="num_convs"):
        RPNHead(in_channels=8, num_anchors=3, num_convs=0)


def _detector_keys(cfg):
    return set(build_detector(cfg, K, log=lambda *_: None).state_dict())


@pytest.mark.parametrize("config", [None] + sorted(os.path.relpath(p, REPO)
                                                   for p in glob.glob(os.path.join(REPO, "configs", "*.yaml"))))
def test_shipped_configs_build_the_keys_they_built_before(config):
    """No conv head, no extra RPN conv, no renamed key: what checkpoints of these configs hold. A cascade
    config (the BCCD recipe since v2) holds that box head once per stage, under roi_head.stages.<t>."""
    cfg = load_config(None if config is None else os.path.join(REPO, config), ["model.backbone.weights=null"])
    keys = _detector_keys(cfg)
    h = cfg.model.roi_head
    expected = {f"fcs.{j}.{p}" for j in range(h.num_fc) for p in (("weight", "bias") if h.fc_norm == "none"
                                                                    else ("weight",))}
    if h.fc_norm != "none":
        expected |= {f"norms.{j}.{p}" for j in range(h.num_fc) for p in ("weight", "bias")}
    prefixes = [f"roi_head.stages.{t}.box_head." for t in range(len(h.cascade))] if h.cascade \
        else ["roi_head.box_head."]
    for prefix in prefixes:
        assert {k[len(prefix):] for k in keys if k.startswith(prefix)} == expected, prefix
    assert not h.cascade or not any(k.startswith("roi_head.box_head.") for k in keys)
    assert {k for k in keys if k.startswith("rpn.head.")} == {
        f"rpn.head.{m}.{p}" for m in ("conv", "cls_logits", "bbox_pred") for p in ("weight", "bias")}
    body = {k for k in keys if k.startswith("backbone.")}
    bb = cfg.model.backbone
    plain = Backbone(depth=bb.depth, norm=bb.norm, freeze_at=bb.freeze_at, features=bb.features,
                     fpn_channels=bb.fpn_channels, fpn_norm=bb.fpn_norm)
    assert body == {f"backbone.{k}" for k in plain.state_dict()}


def test_conv_head_from_config():
    cfg = light_config("fpn")
    cfg.model.roi_head.num_conv, cfg.model.roi_head.conv_dim, cfg.model.roi_head.num_fc = 2, 32, 1
    cfg.model.rpn.head_convs = 2
    keys = _detector_keys(cfg)
    assert "roi_head.box_head.convs.1.1.running_var" in keys and "roi_head.box_head.fcs.0.weight" in keys
    assert "roi_head.box_head.fcs.1.weight" not in keys and "rpn.head.extra_convs.0.weight" in keys
    cfg.model.roi_head.num_conv = 0
    assert isinstance(build_detector(cfg, K, log=lambda *_: None).roi_head.box_head, FCHead)


# --------------------------------------------------------------------------- equality with torchvision v2
def test_conv_head_equals_torchvision_v2_box_head(tv_v2):
    head = ConvFCHead(in_channels=256, pool_size=7, num_conv=4, conv_dim=256, conv_norm="bn", num_fc=1, fc_dim=1024)
    renames = [(f"roi_heads.box_head.{i}.", f"convs.{i}.") for i in range(4)] + [("roi_heads.box_head.5.", "fcs.0.")]
    head.load_state_dict(_renamed(tv_v2.state_dict(), renames), strict=True)
    head.eval()
    x = torch.randn(6, 256, 7, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = tv_v2.roi_heads.box_head(x)
        got = head(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().max() > 0


def test_rpn_head_equals_torchvision_v2_rpn_head(tv_v2):
    head = RPNHead(in_channels=256, num_anchors=3, num_convs=2)
    renames = [("rpn.head.conv.0.0.", "conv."), ("rpn.head.conv.1.0.", "extra_convs.0."),
               ("rpn.head.cls_logits.", "cls_logits."), ("rpn.head.bbox_pred.", "bbox_pred.")]
    head.load_state_dict(_renamed(tv_v2.state_dict(), renames), strict=True)
    g = torch.Generator().manual_seed(3)
    features = [torch.randn(1, 256, s, s, generator=g) for s in (12, 6)]
    with torch.no_grad():
        expected = tv_v2.rpn.head(features)
        got = head(features)
    for e, o in zip(expected, got):
        for a, b in zip(e, o):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_fpn_with_bn_and_frozen_body_equals_torchvision_v2_backbone(tv_v2):
    backbone = Backbone(depth=50, norm="frozen_bn", fpn_norm="bn")
    own = backbone.state_dict()
    fpn = {k[len("backbone."):]: v for k, v in tv_v2.state_dict().items() if k.startswith("backbone.fpn.")}
    assert set(fpn) == {k for k in own if k.startswith("fpn.")}  # the FPN's keys load unchanged
    body = {k[len("backbone."):]: v for k, v in tv_v2.state_dict().items()
            if k.startswith("backbone.body.") and not k.endswith("num_batches_tracked")}
    backbone.load_state_dict({**fpn, **body}, strict=True)
    fpn_norms = [m for m in backbone.fpn.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert len(fpn_norms) == 8 and all(type(m) is nn.BatchNorm2d for m in fpn_norms)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.body.modules())
    backbone.eval()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = list(tv_v2.backbone(x).values())
        got = list(backbone(x).values())
    assert len(got) == len(expected) == 5
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


# --------------------------------------------------------------------------- fpn_norm names, norm_eps
@pytest.mark.parametrize("body, fpn_norm, fpn_type", [
    ("frozen_bn", "bn", nn.BatchNorm2d), ("bn", "gn", nn.GroupNorm), ("gn", "bn", nn.BatchNorm2d),
    ("gn", True, nn.GroupNorm), ("frozen_bn", "sync_bn", nn.BatchNorm2d),
])
def test_fpn_norm_name_picks_the_fpn_norm_whatever_the_body(body, fpn_norm, fpn_type):
    bb = Backbone(depth=18, norm=body, fpn_norm=fpn_norm, fpn_channels=32)
    norms = [m for m in bb.fpn.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, FrozenBatchNorm2d))]
    assert len(norms) == 8 and all(type(m) is fpn_type for m in norms)
    assert all(m.eps == 1e-5 for m in norms)
    assert bb.fpn_norm == (body if fpn_norm is True else fpn_norm)


@pytest.mark.parametrize("kwargs, match", [
    (dict(fpn_norm="bn", features="c4"), "features='fpn'"),
    (dict(fpn_norm=True, norm="frozen_bn"), "trainable norm"),
    (dict(fpn_norm="frozen_bn"), "fpn_norm must be"),
])
def test_fpn_norm_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Backbone(depth=18, **kwargs)


@pytest.mark.parametrize("norm, eps", [("frozen_bn", 0.0), ("bn", 1e-3), ("gn", 1e-6)])
def test_norm_eps_reaches_every_body_norm_and_survives_freezing(norm, eps):
    bb = Backbone(depth=18, norm=norm, norm_eps=eps, freeze_at=2, features="fpn", fpn_norm="bn", fpn_channels=32)
    body_norms = [m for m in bb.body.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, FrozenBatchNorm2d))]
    assert body_norms and all(m.eps == eps for m in body_norms)
    if norm == "bn":  # the stem and layer1 were swapped for FrozenBatchNorm2d by freeze_at
        assert isinstance(bb.body.bn1, FrozenBatchNorm2d) and isinstance(bb.body.layer2[0].bn1, nn.BatchNorm2d)
    assert all(m.eps == 1e-5 for m in bb.fpn.modules() if isinstance(m, nn.BatchNorm2d))
    out = bb.eval()(torch.rand(1, 3, 64, 64))
    assert all(torch.isfinite(t).all() for t in out.values())


def test_config_keys_reach_the_modules():
    cfg = load_config(None, ["model.backbone.norm=frozen_bn", "model.backbone.norm_eps=0", "model.backbone.fpn_norm=bn",
                             "model.backbone.fpn_channels=32", "model.rpn.head_convs=2", "model.roi_head.num_conv=2",
                             "model.roi_head.conv_dim=32", "model.roi_head.conv_norm=gn", "model.roi_head.num_fc=1",
                             "model.roi_head.fc_dim=64"])
    model = build_detector(cfg, K, log=lambda *_: None)
    assert model.backbone.fpn_norm == "bn" and model.backbone.body.bn1.eps == 0.0
    assert len(model.rpn.head.extra_convs) == 1
    head = model.roi_head.box_head
    assert isinstance(head, ConvFCHead) and len(head.convs) == 2 and isinstance(head.convs[0][1], nn.GroupNorm)
    assert head.out_features == 64 and model.roi_head.predictor.cls_score.in_features == 64


# --------------------------------------------------------------------------- training from scratch
@pytest.mark.parametrize("conv_norm", ["bn", "gn"])
def test_a_training_step_with_the_v2_options(conv_norm):
    torch.manual_seed(0)
    cfg = light_config("fpn")
    cfg.model.backbone.fpn_norm = "bn"
    cfg.model.rpn.head_convs = 2
    h = cfg.model.roi_head
    h.num_conv, h.conv_dim, h.conv_norm, h.num_fc = 2, 32, conv_norm, 1
    model = build_detector(cfg, K, log=lambda *_: None).train()
    images, targets = synthetic_images(2, size=96)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = model.roi_head.box_head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.convs.parameters())
    assert model.rpn.head.extra_convs[0].weight.grad.abs().sum() > 0
    optimizer.step()
    after = model.state_dict()
    for key in ("roi_head.box_head.convs.0.0.weight", "rpn.head.extra_convs.0.weight",
                "backbone.fpn.layer_blocks.0.1.weight"):
        assert not torch.equal(before[key], after[key]), key
    if conv_norm == "bn":  # the head's BatchNorm learnt statistics over the sampled RoIs
        assert not torch.equal(before["roi_head.box_head.convs.0.1.running_mean"],
                               after["roi_head.box_head.convs.0.1.running_mean"])
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2
