"""Learned anchors refined online during the LR warm-up (``model.anchors.online_warmup: true``),
then frozen: :class:`detkit.anchors.OnlineAnchorWarmup` driven from the training loop."""

from __future__ import annotations

from typing import Optional

from detkit.anchors import OnlineAnchorWarmup
from detkit.config import save_config
from detkit.engine.hooks.base import Hook, StepInfo
from detkit.runtime import distributed as dist

__all__ = ["OnlineAnchorsHook"]


class _InstallShapes:
    """What the online fit installs its shapes into: the trained model and the evaluated one (the
    moving average, when on), so that both always use the same anchors."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def set_shapes(self, shapes) -> None:
        for model in {id(m): m for m in (self.trainer.bare_model, self.trainer.eval_model)}.values():
            model.set_anchor_shapes(shapes)


class OnlineAnchorsHook(Hook):
    """One refinement step before each warm-up iteration's forward pass, the check-and-freeze after
    the last one; the trainer's ``anchor_shapes`` (and so every checkpoint's) follows. Under DDP each
    step sees the boxes of every process (gathered here, as the anchors package never talks to other
    processes).

    A checkpoint written during the warm-up holds the fit's state (``online_anchors``), so a resumed
    run continues the same fit; config.yaml is rewritten with the frozen shapes.
    """

    def __init__(self) -> None:
        self.warmup: Optional[OnlineAnchorWarmup] = None
        self.resumed_state: Optional[dict] = None
        self.resumed = False

    @staticmethod
    def _end(trainer) -> int:
        return min(trainer.cfg.train.warmup_iters, trainer.total_iters)

    def load_checkpoint(self, trainer, checkpoint: dict) -> None:
        self.resumed, self.resumed_state = True, checkpoint.get("online_anchors")

    def before_train(self, trainer) -> None:
        cfg = trainer.cfg
        if trainer.iteration >= self._end(trainer):
            return
        self.warmup = OnlineAnchorWarmup.create(trainer.anchor_setup, cfg.train.warmup_iters, trainer.anchor_shapes,
                                                trainer.train_set, _InstallShapes(trainer),
                                                gather=dist.all_gather_objects)
        if self.warmup is None:
            return
        if self.resumed and self.resumed_state is not None:
            self.warmup.load_state_dict(self.resumed_state)
        elif self.resumed:
            trainer.log("anchors: the checkpoint holds no online refinement state; the online fit restarts "
                        "from its anchors")
        trainer.log(f"anchors: refined online on each batch of the first {cfg.train.warmup_iters} "
                    f"iterations (LR warm-up), then frozen")

    def before_step(self, trainer, images: list, targets: list) -> None:
        if self.warmup is not None:
            trainer.anchor_shapes = self.warmup.step(targets, [img.shape[-2:] for img in images])

    def after_step(self, trainer, step: StepInfo) -> None:
        if self.warmup is None or step.iteration < self._end(trainer):
            return
        trainer.anchor_shapes = self.warmup.finish(log=trainer.log)
        self.warmup = None
        if trainer.ctx.is_main:
            save_config(trainer.resolved_config(), trainer.paths["config.yaml"])

    def checkpoint_state(self, trainer) -> dict:
        return {"online_anchors": None if self.warmup is None else self.warmup.state_dict()}
