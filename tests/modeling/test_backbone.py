"""Backbone: feature shapes per mode, norms, freezing, init, and weight loading from local files."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.config import Config
from detkit.errors import CheckpointError
from detkit.modeling.anchors import strides_for_features
from detkit.modeling.backbone import Backbone, load_backbone_weights
from detkit.modeling.detector import build_detector


@pytest.mark.parametrize("features, names, strides, channels", [
    ("fpn", ["p2", "p3", "p4", "p5", "p6"], [4, 8, 16, 32, 64], 64),
    ("c4", ["c4"], [16], 256),
    ("c5", ["c5"], [32], 512),
])
def test_feature_shapes(features, names, strides, channels):
    bb = Backbone(depth=18, features=features, fpn_channels=64)
    x = torch.rand(2, 3, 128, 192)
    out = bb(x)
    assert list(out) == names == bb.feature_names
    assert bb.strides == strides == strides_for_features(features)
    assert bb.out_channels == channels
    for name, stride in zip(names, strides):
        assert out[name].shape == (2, channels, -(-128 // stride), -(-192 // stride))
    assert bb.pool_names == (names[:4] if features == "fpn" else names)


def test_resnet50_channels():
    bb = Backbone(depth=50, features="c4")
    assert bb.out_channels == 1024
    assert not hasattr(bb.body, "layer4")  # c4 mode does not build the last stage
    assert bb(torch.rand(1, 3, 64, 64))["c4"].shape == (1, 1024, 4, 4)


@pytest.mark.parametrize("norm, cls", [("bn", nn.BatchNorm2d), ("sync_bn", nn.BatchNorm2d),
                                       ("frozen_bn", FrozenBatchNorm2d), ("gn", nn.GroupNorm)])
def test_norm_layers(norm, cls):
    bb = Backbone(depth=18, norm=norm, features="c5")
    norms = [m for m in bb.body.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm))]
    assert norms and all(type(m) is cls for m in norms)
    bb(torch.rand(1, 3, 64, 64)).popitem()[1].sum().backward()


def test_freeze_at():
    bb = Backbone(depth=18, freeze_at=2, features="fpn")
    for name, p in bb.body.named_parameters():
        frozen = name.startswith(("conv1", "bn1", "layer1"))
        assert p.requires_grad == (not frozen), name
    assert isinstance(bb.body.bn1, FrozenBatchNorm2d)
    assert isinstance(bb.body.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(bb.body.layer2[0].bn1, nn.BatchNorm2d)
    assert all(p.requires_grad for p in bb.fpn.parameters())
    # frozen statistics do not move in training mode
    before = bb.body.layer1[0].bn1.running_mean.clone()
    bb.train()
    bb(torch.rand(2, 3, 64, 64))
    assert torch.equal(before, bb.body.layer1[0].bn1.running_mean)


def test_init_from_scratch():
    bb = Backbone(depth=18, features="c5")
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0)
               for m in bb.modules() if isinstance(m, nn.BatchNorm2d))
    conv = bb.body.layer2[0].conv1  # Kaiming normal, fan-out: std = sqrt(2 / (out * k * k))
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) < 0.1 * expected
    bb0 = Backbone(depth=18, features="c5", zero_init_residual=True)
    assert torch.all(bb0.body.layer1[0].bn2.weight == 0)


@pytest.mark.parametrize("norm, norm_type", [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)])
def test_fpn_norm_normalises_every_fpn_conv(norm, norm_type):
    bb = Backbone(depth=18, features="fpn", norm=norm, fpn_norm=True, fpn_channels=64)
    convs = [m for m in bb.fpn.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in bb.fpn.modules() if isinstance(m, norm_type)]
    assert len(convs) == 8 and len(norms) == 8  # 4 lateral + 4 output convs, each followed by a norm
    assert all(c.bias is None for c in convs)
    bb.train()
    out = bb(torch.rand(2, 3, 128, 96))
    assert [tuple(t.shape) for t in out.values()] == [(2, 64, 32, 24), (2, 64, 16, 12), (2, 64, 8, 6),
                                                      (2, 64, 4, 3), (2, 64, 2, 2)]
    # Training-mode BatchNorm leaves each output conv's channels at zero mean over the batch.
    if norm == "bn":
        assert out["p3"].mean(dim=(0, 2, 3)).abs().max() < 1e-4
    plain = Backbone(depth=18, features="fpn", norm=norm, fpn_channels=64)
    assert not any(isinstance(m, norm_type) for m in plain.fpn.modules())


def test_fpn_norm_from_config():
    cfg = Config()
    cfg.model.backbone.fpn_channels = 32
    cfg.model.backbone.fpn_norm = True
    detector = build_detector(cfg, 3)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in detector.backbone.fpn.modules()) == 8


@pytest.mark.parametrize("kwargs, match", [(dict(features="c4"), "features='fpn'"),
                                           (dict(norm="frozen_bn"), "trainable norm")])
def test_fpn_norm_rejects_impossible_combinations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Backbone(depth=18, fpn_norm=True, **kwargs)


# --------------------------------------------------------------------------- weight loading
def _tv_state(depth=18):
    torch.manual_seed(1)
    return getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()


def test_load_torchvision_state_dict(tmp_path):
    state = _tv_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    bb = Backbone(depth=18, features="fpn")
    lines = []
    report = load_backbone_weights(bb, str(path), log=lines.append)
    assert torch.equal(bb.body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(bb.body.bn1.running_var, state["bn1.running_var"])
    assert report["unexpected"] == [] and report["ignored"] == ["body.fc.bias", "body.fc.weight"]
    assert all(k.startswith("fpn.") for k in report["missing"]) and report["missing"]
    assert any("classifier" in line and "body.fc.weight" in line and "ignored" in line for line in lines)


def test_load_into_frozen_stages(tmp_path):
    state = _tv_state()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    bb = Backbone(depth=18, freeze_at=2, features="c4")
    report = load_backbone_weights(bb, str(path), log=lambda s: None)
    assert torch.equal(bb.body.layer1[0].bn1.running_mean, state["layer1.0.bn1.running_mean"])
    assert not any("num_batches_tracked" in k for k in report["unexpected"])
    assert "body.layer4.0.conv1.weight" in report["unexpected"]  # c4 has no layer4


def test_changed_layer_is_an_error_naming_the_tensor_and_both_shapes(tmp_path):
    state = _tv_state()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)  # wrong in-channels
    path = tmp_path / "changed.pth"
    torch.save(state, path)
    bb = Backbone(depth=18, features="c5")
    init = bb.body.layer2[0].conv1.weight.clone()
    with pytest.raises(CheckpointError) as info:
        load_backbone_weights(bb, str(path), log=lambda s: None)
    message = str(info.value)
    assert "body.layer2.0.conv1.weight: file [128, 32, 3, 3] vs model [128, 64, 3, 3]" in message, message
    assert "changed.pth" in message and "\n" not in message
    assert torch.equal(bb.body.layer2[0].conv1.weight, init)  # nothing half-loaded


def test_load_detkit_checkpoint(tmp_path):
    cfg = Config()
    cfg.model.backbone.features = "c5"
    cfg.model.anchors.sizes = [[64.0, 128.0]]
    src = build_detector(cfg, 3)
    path = tmp_path / "last.pt"
    torch.save({"model": src.state_dict(), "epoch": 3, "classes": ["a", "b", "c"]}, path)
    cfg.model.backbone.weights = str(path)
    lines = []
    dst = build_detector(cfg, 5, log=lines.append)
    for key, value in src.backbone.state_dict().items():
        assert torch.equal(dst.backbone.state_dict()[key], value), key
    assert any("detector format" in line for line in lines)


@pytest.mark.parametrize("content", ["list", "garbage", "empty_dict", "no_tensors"])
def test_not_a_state_dict_raises(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content == "list":
        torch.save([1, 2, 3], path)
    elif content == "garbage":
        path.write_bytes(b"this is not a torch file")
    elif content == "empty_dict":
        torch.save({}, path)
    else:
        torch.save({"conv1.weight": "a string"}, path)
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_backbone_weights(Backbone(depth=18, features="c5"), str(path), log=lambda s: None)


def test_missing_file_and_foreign_state_dict(tmp_path):
    bb = Backbone(depth=18, features="c5")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone_weights(bb, str(tmp_path / "nope.pth"))
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="no key"):
        load_backbone_weights(bb, str(path), log=lambda s: None)
