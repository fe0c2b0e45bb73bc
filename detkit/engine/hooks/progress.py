"""The progress bar of each epoch (loss, LR, img/s) and the one-line summary after it."""

from __future__ import annotations

import sys

from tqdm import tqdm

from detkit.engine.hooks.base import EpochEnd, Hook, StepInfo

__all__ = ["ProgressHook"]


class ProgressHook(Hook):
    """A tqdm bar per epoch: quiet with ``quiet``, on ranks other than 0, or when stderr is no terminal."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def before_epoch(self, trainer, epoch: int) -> None:
        self.bar = tqdm(total=len(trainer.train_loader), desc=f"epoch {epoch + 1}/{trainer.epochs}",
                        leave=False, disable=self.quiet or not trainer.ctx.is_main or not sys.stderr.isatty())

    def after_step(self, trainer, step: StepInfo) -> None:
        self.bar.update(1)
        if self.bar.disable:
            return
        # Losses still on a GPU are read (a synchronisation) only when the records read them too.
        if getattr(step.losses, "on_host", True) or step.iteration % trainer.cfg.train.log_every == 0:
            self.bar.set_postfix(loss=f"{step.losses['loss']:.3f}", lr=f"{step.lr:.4g}",
                                 img_s=f"{step.img_per_s:.2f}")

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        self.bar.close()
        if not end.stopped_early:
            trainer.log(f"epoch {end.index + 1}/{trainer.epochs}: iteration {trainer.iteration}, "
                        f"{end.img_per_s:.2f} img/s")
