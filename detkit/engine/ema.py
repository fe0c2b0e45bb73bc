"""An exponential moving average (EMA) of the model's weights, evaluated and saved in their place.

``train.ema_decay: d`` keeps, beside the trained model, a copy whose every floating-point parameter
and buffer follows

    ema <- d_t * ema + (1 - d_t) * model          after each optimizer step t = 1, 2, ...
    d_t  = d * (1 - exp(-t / train.ema_tau))

The ramp makes the first steps nearly copy the model (d_1 is about d / tau), so the random
initialisation is forgotten quickly, and settles at ``d`` after a few ``ema_tau`` iterations. Integer
buffers (BatchNorm's ``num_batches_tracked``) are copied, not averaged.

Why: late in a schedule SGD's weights jitter around a minimum at the scale of the learning rate;
their average sits nearer its centre. It is the model EMA of YOLOv5, Detectron2 and MMDetection.
The averaged BatchNorm running statistics are not the statistics of the averaged weights, which is
why the trainer re-estimates them for the EMA copy before each evaluation (precise BatchNorm, on by
default) just as it does for the trained model when the EMA is off.

The copy lives on the same device as the model; it is never trained, so its autograd is off.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """A moving average of ``model``'s state, updated by :meth:`update` after each optimizer step.

    Args:
        model: the bare (not DDP-wrapped) model being trained; the average starts as its copy.
        decay: the asymptotic decay ``d`` in (0, 1).
        tau: time constant of the decay's ramp, in iterations (> 0).
    """

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if not tau > 0:
            raise ValueError(f"EMA tau must be > 0 iterations, got {tau}")
        self.decay, self.tau = float(decay), float(tau)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        """``d_t`` of the next update (t = updates + 1)."""
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current state (same architecture)."""
        d = self.current_decay()
        source = model.state_dict()
        for name, avg in self.model.state_dict().items():
            value = source[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(value.to(avg.dtype), alpha=1.0 - d)
            else:
                avg.copy_(value)
        self.updates += 1
