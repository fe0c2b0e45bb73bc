"""Stop training at the first non-finite loss, naming the iteration, the losses and the last good
checkpoint (first in the hook list, so that no other hook sees the step)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from detkit.engine.hooks.base import EpochEnd, Hook, StepInfo, StepLosses
from detkit.errors import TrainingError

__all__ = ["NaNGuardHook"]


class NaNGuardHook(Hook):
    """Raises :class:`TrainingError` after a step whose loss is NaN or infinite.

    The losses are the mean over processes, so every rank takes the same decision. Nothing is
    saved after such a step: the error propagates before the epoch's checkpoint.

    Losses on the host (CPU training) are checked after every step. Losses still on a GPU are not
    read every step (that would wait for the GPU each time): the first non-finite iteration is
    recorded on the device, and read every ``check_every`` iterations and at the end of each epoch
    (before its evaluation and checkpoint), so training stops at most ``check_every - 1`` steps
    after the bad one and the message still names the first bad iteration.
    """

    def __init__(self, check_every: int = 1) -> None:
        self.check_every = max(1, int(check_every))
        self.first_bad: Optional[torch.Tensor] = None  # int64 on the device: the first bad iteration, -1 none
        self.first_bad_losses: Optional[torch.Tensor] = None  # the losses of that iteration
        self.last_step: Optional[StepInfo] = None

    def after_step(self, trainer, step: StepInfo) -> None:
        losses = step.losses
        if isinstance(losses, StepLosses) and not losses.on_host:
            self._record(step, losses)
            if step.iteration % self.check_every == 0:
                self._check_device(trainer)
            return
        if not math.isfinite(losses["loss"]):
            self._raise(trainer, step.iteration, dict(losses))

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        self._check_device(trainer)

    def _record(self, step: StepInfo, losses: StepLosses) -> None:
        values = losses.values
        bad = ~torch.isfinite(values).all()
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.int64, device=values.device)
            self.first_bad_losses = torch.zeros_like(values)
        new = bad & (self.first_bad < 0)
        self.first_bad = torch.where(new, step.iteration, self.first_bad)
        self.first_bad_losses = torch.where(new, values, self.first_bad_losses)
        self.last_step = step

    def _check_device(self, trainer) -> None:
        if self.first_bad is None:
            return
        first = int(self.first_bad)  # a host synchronisation, every check_every steps
        if first >= 0:
            names = self.last_step.losses.names
            values = dict(zip(names, self.first_bad_losses.tolist()))
            values["loss"] = sum(values.values())
            self._raise(trainer, first, values)

    @staticmethod
    def _raise(trainer, iteration: int, losses: dict) -> None:
        where = trainer.last_good_checkpoint or "none written yet"
        values = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        raise TrainingError(f"loss is {losses['loss']} at iteration {iteration} ({values}); "
                            f"training stopped. Last good checkpoint: {where}")
