"""Folding inference-mode BatchNorm into the convolution before it: same outputs, one op less per layer.

In eval mode a BatchNorm after a convolution is a fixed per-channel affine map,
``y = (conv(x) - mean) / sqrt(var + eps) * gamma + beta``, so it can be multiplied into the
convolution: ``W' = W * s`` per output channel and ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. The BatchNorm is then replaced by ``nn.Identity``. On the CPU this
removes a full read and write of every normalised feature map (ResNet-18 has 20 of them).

Which pairs are folded: a module's ``convN`` / ``bnN`` attributes (torchvision's ResNet stem and
blocks), and a ``Conv2d`` directly followed by a BatchNorm in an ``nn.Sequential`` (the ResNet
downsample branch, the FPN's conv + norm blocks). BatchNorm2d, SyncBatchNorm and torchvision's
FrozenBatchNorm2d are folded; GroupNorm is not (its statistics depend on the input).

A folded model is for inference only: its state dict has no BatchNorm entries and biases the
unfolded model lacks, so keep the original for training or checkpoints.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["fold_batch_norm", "foldable_norm"]

_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)
_CONV_NAME = re.compile(r"^conv(\d*)$")


def foldable_norm(module: nn.Module) -> bool:
    """True for the normalisation layers :func:`fold_batch_norm` folds."""
    return isinstance(module, _BATCH_NORMS)


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Multiply ``norm`` (inference mode) into ``conv`` in place, keeping the weight's memory layout."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"{type(norm).__name__} without running statistics cannot be folded")
    eps = float(norm.eps)
    gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
    beta = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    # In float64: the fold rounds once, not at every intermediate step.
    scale = gamma.double() * (norm.running_var.double() + eps).rsqrt()  # (C_out,)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new_bias = (bias - norm.running_mean.double()) * scale + beta.double()
    conv.weight.mul_(scale.to(conv.weight.dtype).view(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(new_bias)


def _fold_children(module: nn.Module) -> int:
    folded = 0
    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        for first, second in zip(names[:-1], names[1:]):
            conv, norm = children[first], children[second]
            if isinstance(conv, nn.Conv2d) and foldable_norm(norm):
                _fold_pair(conv, norm)
                module._modules[second] = nn.Identity()
                folded += 1
    for name, child in children.items():
        match = _CONV_NAME.match(name)
        norm_name = f"bn{match.group(1) or ''}" if match else None
        if match and isinstance(child, nn.Conv2d) and foldable_norm(children.get(norm_name)):
            _fold_pair(child, children[norm_name])
            setattr(module, norm_name, nn.Identity())
            folded += 1
    for child in module.children():
        folded += _fold_children(child)
    return folded


def fold_batch_norm(model: nn.Module) -> int:
    """Fold every (conv, BatchNorm) pair of ``model`` in place; returns how many were folded.

    Raises:
        ValueError: the model is in training mode (its BatchNorm layers normalise with batch
            statistics there, which no fixed convolution reproduces).
    """
    if any(isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) and m.training for m in model.modules()):
        raise ValueError("fold_batch_norm needs the model in eval mode (call model.eval() first): in training "
                         "mode BatchNorm uses each batch's statistics, which cannot be folded")
    return _fold_children(model)
