"""Optimizer and learning-rate schedule built from the train config.

The schedule is a function of the iteration (stepped once per iteration): a linear warm-up from
``warmup_factor * lr`` to ``lr`` over ``warmup_iters``, then

- ``multistep``: x ``gamma`` at each fraction of ``total_iters`` in ``lr_steps``;
- ``cosine``: half a cosine from ``lr`` down to 0 at ``total_iters``;
- ``constant``: ``lr``.

``total_iters`` is ``epochs x iterations per epoch``. Extending a finished run with more epochs
(``train.epochs`` raised on ``--resume``) recomputes the milestones from the new total: the LR
follows the schedule the longer run would have had from the current iteration on. A
``train.time_budget`` plan changes the length while training the same way (:func:`resize_scheduler`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from detkit.config import TrainConfig

__all__ = ["build_optimizer", "lr_factor", "build_scheduler", "resize_scheduler"]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    if not cfg.no_decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if isinstance(module, _NORM_TYPES) or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over the trainable parameters."""
    groups = _param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # validated in config; a bug if reached


def lr_factor(iteration: int, cfg: TrainConfig, total_iters: int) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based) of a run of ``total_iters`` iterations."""
    factor = 1.0
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        factor = cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.schedule == "multistep":
        passed = sum(1 for step in cfg.lr_steps if iteration >= int(round(step * total_iters)))
        return factor * cfg.gamma ** passed
    if cfg.schedule == "cosine":
        progress = min(iteration / max(total_iters, 1), 1.0)
        return factor * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int):
    """A LambdaLR stepped once per iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg, total_iters))


def resize_scheduler(scheduler, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_iters: int):
    """``scheduler`` (from :func:`build_scheduler`) for a run of ``total_iters`` iterations, at the same position.

    The LR follows the new length's schedule from the current iteration on: the warm-up (in iterations)
    is unchanged, cosine and multistep milestones scale with the new length; the optimizer's LR is set
    to the new schedule's value at the current iteration at once.
    """
    resized = build_scheduler(optimizer, cfg, total_iters)  # its first step sets the LR of iteration 0 ...
    resized.load_state_dict(scheduler.state_dict())  # ... the position comes back ...
    factor = lr_factor(resized.last_epoch, cfg, total_iters)
    for group, base_lr in zip(optimizer.param_groups, resized.base_lrs):  # ... and with it the LR
        group["lr"] = base_lr * factor
    return resized
