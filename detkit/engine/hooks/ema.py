"""The moving average of the weights (``train.ema_decay``) as a hook: updated after every step,
evaluated and saved as the checkpoints' ``model``, the trained weights saved beside it."""

from __future__ import annotations

from detkit.engine.ema import ModelEMA
from detkit.engine.hooks.base import Hook, StepInfo
from detkit.weights.checkpoint import load_weights

__all__ = ["EMAHook"]


class EMAHook(Hook):
    """Keeps a :class:`ModelEMA` of ``model``; :attr:`model` is the average to evaluate and save.

    Checkpoints get ``train_model`` (the trained weights, which a resume continues from) and
    ``ema_updates``; the trainer saves :attr:`model` as their ``model``.
    """

    def __init__(self, model, decay: float, tau: float) -> None:
        self.ema = ModelEMA(model, decay, tau)

    @property
    def model(self):
        return self.ema.model

    def before_train(self, trainer) -> None:
        trainer.log(f"weights: evaluated and saved as their moving average (decay {self.ema.decay}, "
                    f"ramp {self.ema.tau:g} iterations)")

    def after_step(self, trainer, step: StepInfo) -> None:
        self.ema.update(trainer.bare_model)

    def checkpoint_state(self, trainer) -> dict:
        return {"train_model": trainer.bare_model.state_dict(), "ema_updates": self.ema.updates}

    def load_checkpoint(self, trainer, checkpoint: dict) -> None:
        load_weights(self.ema.model, checkpoint["model"], trainer.paths["last.pt"])
        if "train_model" in checkpoint:
            self.ema.updates = int(checkpoint.get("ema_updates", checkpoint["iteration"]))
        else:
            trainer.log("weights: the checkpoint has no moving average (train.ema_decay was off); "
                        "the average starts from its weights")
