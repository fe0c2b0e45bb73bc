"""last.pt after every ``train.checkpoint_every`` epochs (and the last, and a stopped one); best.pt
whenever an evaluation improves ``eval.best_metric``; with ``train.keep_evaluated``, the weights of
every evaluation as evaluated/epoch_NNN.pt. Rank 0 writes; writes are atomic."""

from __future__ import annotations

import os

from detkit.engine.hooks.base import EpochEnd, Evaluation, Hook
from detkit.weights.checkpoint import save_checkpoint

__all__ = ["LastCheckpointHook", "BestCheckpointHook", "EvaluatedWeightsHook", "save_run_checkpoint",
           "EVALUATED_DIR"]

EVALUATED_DIR = "evaluated"
# What an evaluated-weights file keeps of the full checkpoint: enough for detkit eval and detkit infer.
_WEIGHTS_KEYS = ("model", "config", "classes", "category_ids", "anchor_shapes", "epoch", "iteration",
                 "precision", "online_anchors")


def save_run_checkpoint(trainer, name: str, epoch: int) -> None:
    """Write the trainer's full state (:meth:`Trainer.checkpoint_state`) as ``name`` in the run folder."""
    if trainer.ctx.is_main:
        save_checkpoint(trainer.checkpoint_state(epoch), trainer.paths[name])


class LastCheckpointHook(Hook):
    """last.pt, the checkpoint ``--resume`` continues from; ``trainer.last_good_checkpoint`` names it."""

    def __init__(self, every: int) -> None:
        self.every = every

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        if end.stopped_early or end.last or (end.index + 1) % self.every == 0:
            save_run_checkpoint(trainer, "last.pt", end.completed)
            trainer.last_good_checkpoint = trainer.paths["last.pt"]


class BestCheckpointHook(Hook):
    """best.pt at each improving evaluation; a run that never produced one (no metric value) gets
    its final state as best.pt, so that the file always exists at the end."""

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        if evaluation.improved:
            save_run_checkpoint(trainer, "best.pt", evaluation.epoch)

    def after_train(self, trainer) -> None:
        if not os.path.exists(trainer.paths["best.pt"]) and os.path.exists(trainer.paths["last.pt"]):
            save_run_checkpoint(trainer, "best.pt", trainer.cfg.train.epochs)


class EvaluatedWeightsHook(Hook):
    """evaluated/epoch_NNN.pt after each evaluation: the weights exactly as evaluated (the moving average
    where there is one, with the precise-BN statistics), without optimizer or resume state, so that a
    run's evaluations can be repeated later on another split (say, a test split no choice was tuned on).

    ``NNN`` is the number of completed epochs; the file also records the iteration."""

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        if not trainer.ctx.is_main:
            return
        folder = os.path.join(trainer.out, EVALUATED_DIR)
        os.makedirs(folder, exist_ok=True)
        state = trainer.checkpoint_state(evaluation.epoch)
        weights = {key: state[key] for key in _WEIGHTS_KEYS if key in state}
        save_checkpoint(weights, os.path.join(folder, f"epoch_{evaluation.epoch:03d}.pt"))
