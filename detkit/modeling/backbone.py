"""ResNet backbone (torchvision builders, weights=None) with optional FPN, and loading its weights from a
local file or a torchvision weights name (:mod:`detkit.hub`).

Shape shorthand: B images, C channels, H/W padded input height/width, L feature levels.

``Backbone(x: Tensor[B, 3, H, W]) -> OrderedDict[name, Tensor[B, C, H/s, W/s]]`` with

- ``features="fpn"``: names ``p2 p3 p4 p5 p6``, strides 4, 8, 16, 32, 64, ``C = fpn_channels``
  (torchvision.ops.FeaturePyramidNetwork + LastLevelMaxPool, as torchvision's Faster R-CNN);
- ``features="c4"``: name ``c4``, stride 16, the output of ``layer3`` (256 ch for ResNet-18/34,
  1024 for 50/101); ``layer4`` is not built;
- ``features="c5"``: name ``c5``, stride 32, the output of ``layer4`` (512 / 2048 ch).

Normalisation layers: ``bn`` (trainable BatchNorm2d), ``frozen_bn`` (torchvision's
FrozenBatchNorm2d: fixed affine and statistics), ``sync_bn`` (plain BatchNorm2d here; the
distributed engine converts it with ``nn.SyncBatchNorm.convert_sync_batchnorm``), ``gn``
(GroupNorm with 32 groups). ``freeze_at = k`` freezes the first k of (stem, layer1, layer2,
layer3, layer4), the convention of Detectron2's ``FREEZE_AT`` and of torchvision's
``trainable_layers = 5 - k``: their parameters stop requiring gradients and their BatchNorm
layers become FrozenBatchNorm2d, so their statistics stop moving too.

Initialisation (from-scratch training): torchvision's ResNet init (Kaiming-normal fan-out convs,
norm weight 1 / bias 0); FPN convs Kaiming-uniform (a=1) with zero bias, as torchvision.
``zero_init_residual=True`` (``model.backbone.zero_init_residual``) additionally zeroes the last
norm gamma of every residual block (Goyal et al. 2017), so each block starts as the identity. Off
by default, as in torchvision: on a from-scratch toy run (light C4 detector, 8 synthetic images,
100 SGD steps at lr 0.02 with warm-up, two seeds) it reached train AP50 0.69 / 0.56 against
0.92 / 0.88 without it, at the same final loss.

``fpn_norm=True`` (``model.backbone.fpn_norm``) puts the backbone's norm layer after every FPN
lateral (1x1) and output (3x3) conv, whose biases are then dropped: from-scratch detectors train
better when every layer is normalised (He et al., "Rethinking ImageNet Pre-training", 2019).
``fpn_norm="bn"`` / ``"sync_bn"`` / ``"gn"`` picks the FPN's norm whatever the body's: torchvision's
``fasterrcnn_resnet50_fpn_v2`` is a frozen-BN body with a (trainable) BatchNorm2d FPN, and its
``backbone.fpn.*`` keys are this module's ``fpn.*`` keys. Off by default, as torchvision's FPN.

``norm_eps`` (``model.backbone.norm_eps``) is the eps of the body's norm layers (kept by the
FrozenBatchNorm2d that ``freeze_at`` swaps in); torchvision's COCO_V1 Faster R-CNN weights use
frozen BN with eps 0.0. The FPN's norm layers keep torch's default 1e-5, as torchvision's.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detkit.config import GROUP_NORM_GROUPS
from detkit.errors import CheckpointError
from detkit.hub import PREFIX, read_state_dict, resolve_weights

__all__ = ["Backbone", "load_backbone_weights", "NORMS", "FEATURES", "FPN_NORMS"]

NORMS = ("bn", "frozen_bn", "sync_bn", "gn")
FPN_NORMS = ("bn", "sync_bn", "gn")  # what fpn_norm may name besides True / False
FEATURES = ("fpn", "c4", "c5")
_BUILDERS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}
_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _norm_layer(norm: str, eps: float = 1e-5) -> Callable[[int], nn.Module]:
    """channels -> a fresh norm layer of kind ``norm`` with that ``eps``."""
    if norm in ("bn", "sync_bn"):
        return lambda channels: nn.BatchNorm2d(channels, eps=eps)
    if norm == "frozen_bn":
        return lambda channels: FrozenBatchNorm2d(channels, eps=eps)
    if norm == "gn":
        return lambda channels: nn.GroupNorm(GROUP_NORM_GROUPS, channels, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _fpn_norm_name(fpn_norm: Union[bool, str], norm: str, features: str) -> Optional[str]:
    """The norm the FPN's convs get: None (no norm), the body's ``norm`` (True) or the one named."""
    if fpn_norm is False:
        return None
    if features != "fpn":
        raise ValueError(f"fpn_norm={fpn_norm!r} needs features='fpn', got features={features!r}")
    if fpn_norm is True:
        if norm == "frozen_bn":
            raise ValueError(f"fpn_norm=True needs a trainable norm ('bn', 'sync_bn' or 'gn'): frozen_bn in "
                             f"freshly initialised FPN layers would be a fixed identity; or name the FPN's own "
                             f"norm, fpn_norm one of {FPN_NORMS}")
        return norm
    if fpn_norm not in FPN_NORMS:
        raise ValueError(f"fpn_norm must be False, True or one of {FPN_NORMS}, got {fpn_norm!r}")
    return fpn_norm


def _freeze_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d inside `module` by a FrozenBatchNorm2d holding the same values."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = _freeze_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


class Backbone(nn.Module):
    """ResNet-18/34/50/101 body with BatchNorm (or GN / frozen BN) and an optional FPN.

    Attributes:
        fpn_norm: the norm of the FPN's convs (``"bn"``, ``"sync_bn"``, ``"gn"``), None without one.
        out_channels: channels C of every returned feature map.
        feature_names: names of the returned maps, finest first (``p2..p6`` or ``c4`` / ``c5``).
        strides: stride of each returned map, same order.
        pool_names: the maps the RoI head pools from (``p2..p5`` for FPN, as torchvision; else all).
        body: an ``nn.ModuleDict``-like holder whose keys equal torchvision's ResNet attribute names
            (``conv1``, ``bn1``, ``layer1`` ...), so a torchvision ResNet state dict loads into it.
    """

    def __init__(self, *, depth: int = 18, norm: str = "bn", freeze_at: int = 0, features: str = "fpn",
                 fpn_channels: int = 256, zero_init_residual: bool = False, fpn_norm: Union[bool, str] = False,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        if depth not in _BUILDERS:
            raise ValueError(f"depth must be one of {sorted(_BUILDERS)}, got {depth!r}")
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in [0, 5], got {freeze_at}")
        if norm_eps < 0:
            raise ValueError(f"norm_eps must be >= 0, got {norm_eps!r}")
        self.fpn_norm = _fpn_norm_name(fpn_norm, norm, features)
        self.norm = norm
        self.features = features
        net = _BUILDERS[depth](weights=None, norm_layer=_norm_layer(norm, norm_eps),
                               zero_init_residual=zero_init_residual)
        expansion = 4 if depth >= 50 else 1
        stage_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        num_stages = 3 if features == "c4" else 4
        self.body = nn.Module()
        for name in ("conv1", "bn1", "relu", "maxpool"):
            setattr(self.body, name, getattr(net, name))
        for i in range(num_stages):
            setattr(self.body, f"layer{i + 1}", getattr(net, f"layer{i + 1}"))
        self._num_stages = num_stages
        self._freeze(freeze_at)

        if features == "fpn":
            # With a norm layer torchvision's FPN drops the conv biases (the norm's shift replaces them).
            self.fpn: Optional[FeaturePyramidNetwork] = FeaturePyramidNetwork(
                in_channels_list=stage_channels, out_channels=fpn_channels, extra_blocks=LastLevelMaxPool(),
                norm_layer=_norm_layer(self.fpn_norm) if self.fpn_norm else None)
            self.out_channels = fpn_channels
            self.feature_names = ["p2", "p3", "p4", "p5", "p6"]
            self.strides = [4, 8, 16, 32, 64]
            self.pool_names = ["p2", "p3", "p4", "p5"]
        else:
            self.fpn = None
            self.out_channels = stage_channels[num_stages - 1]
            self.feature_names = [features]
            self.strides = [16 if features == "c4" else 32]
            self.pool_names = [features]

    def _freeze(self, freeze_at: int) -> None:
        for stage in _STAGES[:freeze_at]:
            modules = [self.body.conv1, self.body.bn1] if stage == "stem" else [getattr(self.body, stage, None)]
            for module in modules:
                if module is None:  # layer4 in c4 mode
                    continue
                for p in module.parameters():
                    p.requires_grad_(False)
            if stage == "stem":
                self.body.bn1 = _freeze_bn(self.body.bn1)
            elif hasattr(self.body, stage):
                setattr(self.body, stage, _freeze_bn(getattr(self.body, stage)))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """x: Tensor[B, 3, H, W] (normalised, H and W multiples of the largest stride) ->
        OrderedDict name -> Tensor[B, C, H / stride, W / stride], finest level first."""
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        stages = []
        for i in range(self._num_stages):
            x = getattr(b, f"layer{i + 1}")(x)
            stages.append(x)
        if self.fpn is None:
            return OrderedDict([(self.feature_names[0], stages[-1])])
        inputs = OrderedDict((f"p{i + 2}", c) for i, c in enumerate(stages))
        outputs = self.fpn(inputs)  # keys p2..p5 plus "pool" (the max-pooled P5)
        return OrderedDict(zip(self.feature_names, outputs.values()))


# --------------------------------------------------------------------------- weight loading
WEIGHTS_KEY = "model.backbone.weights"
# (bottleneck blocks?, blocks in layer3) -> ResNet depth, read from a state dict's key names.
_DEPTH_BY_BLOCKS = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101, (True, 36): 152}
_LAYER3_BLOCK = re.compile(r"^body\.layer3\.(\d+)\.")
_OLD_FPN_KEY = re.compile(r"^fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(weight|bias)$")
_NAMED = 3  # mismatched tensors named in the error; the rest are counted


def _backbone_keys(state: dict) -> tuple[dict, str]:
    """(state renamed to the Backbone's own keys, kind): kind ``"detector"`` when the file is a whole
    detector's state dict (``backbone.*`` keys: a detkit checkpoint or a torchvision Faster R-CNN; only
    the backbone entries are taken), else ``"ResNet"`` (a classification ResNet: every key goes under
    ``body.``)."""
    if any(k.startswith("backbone.") for k in state):
        out = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        # torchvision's FPN before v0.13 named its convs inner_blocks.i.weight; now inner_blocks.i.0.weight.
        return {_OLD_FPN_KEY.sub(r"fpn.\1.\2.0.\3", k): v for k, v in out.items()}, "detector"
    return {"body." + k: v for k, v in state.items()}, "ResNet"


def _resnet_depth(keys) -> Optional[int]:
    """The ResNet depth that the ``body.*`` key names of a state dict spell, or None when they do not."""
    blocks = [int(m.group(1)) for m in map(_LAYER3_BLOCK.match, keys) if m]
    if not blocks:
        return None
    bottleneck = any(k.startswith("body.layer1.0.conv3.") for k in keys)
    return _DEPTH_BY_BLOCKS.get((bottleneck, max(blocks) + 1))


def _mismatch_error(source: str, mismatched: list, file_depth: Optional[int],
                    model_depth: Optional[int]) -> CheckpointError:
    named = "; ".join(f"{key}: file {list(f)} vs model {list(m)}" for key, f, m in mismatched[:_NAMED])
    more = f"; and {len(mismatched) - _NAMED} more" if len(mismatched) > _NAMED else ""
    what = f"{len(mismatched)} tensors of {source} do not fit the model ({named}{more})" if mismatched else \
        f"{source} does not fit the model"
    if file_depth is not None and model_depth is not None and file_depth != model_depth:
        hint = (f"the file holds a ResNet-{file_depth} and the model is a ResNet-{model_depth}: "
                f"set model.backbone.depth={file_depth}")
    else:
        hint = "is it the same architecture (model.backbone.depth, fpn_channels, fpn_norm)?"
    return CheckpointError(f"{WEIGHTS_KEY}: {what}; {hint}")


def load_backbone_weights(backbone: Backbone, weights: str, *, log: Callable[[str], None] = print) -> dict:
    """Load ``weights`` (a local file or a torchvision name, see :mod:`detkit.hub`) into `backbone`.

    ``weights`` is a path, or ``torchvision:<Enum>.<MEMBER>`` (``torchvision:ResNet50_Weights.IMAGENET1K_V2``,
    ``torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1``), read from torch hub's cache or downloaded
    there. The file's state dict (:func:`detkit.hub.read_state_dict`) is either a classification ResNet's
    (``resnet50().state_dict()``, any depth detkit builds): it maps onto ``backbone.body``, its ``fc.*``
    classifier ignored; or a whole detector's (a detkit checkpoint, a torchvision Faster R-CNN): only its
    ``backbone.*`` entries are taken (body and FPN). Keys missing from the file (the FPN, from an ImageNet
    file) keep their initialisation and are reported through `log`, as are unexpected ones.

    Returns:
        dict(loaded=[...], missing=[...], unexpected=[...], ignored=[...] (the ``fc.*`` keys)).
    Raises:
        CheckpointError: the file is missing, unreadable or not a state dict; a tensor's shape differs from
            the model's (the error names the first few tensors, both shapes, and the depth to set when the
            file is a ResNet of another depth); the file's ResNet depth is not the model's; or no key
            matches.
        ConfigError: a ``torchvision:`` name that torchvision does not have (the nearest suggested).
    """
    resolved = resolve_weights(weights, key=WEIGHTS_KEY, log=log)
    state, kind = _backbone_keys(read_state_dict(resolved.path, key=WEIGHTS_KEY))
    source = f"'{resolved.path}'" + (f" ({PREFIX}{resolved.name})" if resolved.name else "")
    ignored = sorted(k for k in state if kind == "ResNet" and k.startswith("body.fc."))
    own = backbone.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    file_depth, model_depth = _resnet_depth(state), _resnet_depth(own)
    if mismatched or (file_depth is not None and model_depth is not None and file_depth != model_depth):
        raise _mismatch_error(source, mismatched, file_depth, model_depth)
    # FrozenBatchNorm2d has no num_batches_tracked, and it carries no weight: not worth reporting.
    unexpected = sorted(k for k in state if k not in own and k not in ignored and not k.endswith("num_batches_tracked"))
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    if not loadable:
        raise CheckpointError(f"{WEIGHTS_KEY}: no key of {source} ({kind} format, {len(state)} keys) matches the "
                              f"backbone (e.g. {next(iter(own))!r}); is it a ResNet or detector state dict?")
    backbone.load_state_dict(loadable, strict=False)
    classifier = f"; its ImageNet classifier ({', '.join(ignored)}) ignored" if ignored else ""
    log(f"loaded {len(loadable)} backbone tensors from {source} ({kind} format{classifier})")
    if missing:
        log(f"  missing in the file (kept at init) [{len(missing)}]: {', '.join(missing)}")
    if unexpected:
        log(f"  unexpected in the file (ignored) [{len(unexpected)}]: {', '.join(unexpected)}")
    return {"loaded": sorted(loadable), "missing": missing, "unexpected": unexpected, "ignored": ignored}
