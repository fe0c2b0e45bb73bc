"""Stop training at the first non-finite loss, naming the iteration, the losses and the last good
checkpoint (first in the hook list, so that no other hook sees the step)."""

from __future__ import annotations

import math

from detkit.engine.hooks.base import Hook, StepInfo
from detkit.errors import TrainingError

__all__ = ["NaNGuardHook"]


class NaNGuardHook(Hook):
    """Raises :class:`TrainingError` after a step whose loss is NaN or infinite.

    The losses are the mean over processes, so every rank takes the same decision. Nothing is
    saved after such a step: the error propagates before the epoch's checkpoint.
    """

    def after_step(self, trainer, step: StepInfo) -> None:
        if math.isfinite(step.losses["loss"]):
            return
        where = trainer.last_good_checkpoint or "none written yet"
        values = ", ".join(f"{k}={v:.4g}" for k, v in step.losses.items())
        raise TrainingError(f"loss is {step.losses['loss']} at iteration {step.iteration} ({values}); "
                            f"training stopped. Last good checkpoint: {where}")
