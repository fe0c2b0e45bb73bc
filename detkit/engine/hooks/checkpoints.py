"""last.pt after every ``train.checkpoint_every`` epochs (and the last, and a stopped one); best.pt
whenever an evaluation improves ``eval.best_metric``; with ``train.keep_evaluated``, the weights of
every evaluation as evaluated/epoch_NNN.pt. Rank 0 writes; writes are atomic.

Only last.pt is a full checkpoint (what ``--resume`` and extending a run read). best.pt and the
evaluated weights keep :data:`WEIGHTS_KEYS` alone (the evaluated weights, config, classes, anchors:
what eval, infer, export and ``model.weights`` read), not the optimizer state or, beside a moving
average, the raw trained weights: a third of the size (issue 40)."""

from __future__ import annotations

import os

from detkit.engine.hooks.base import EpochEnd, Evaluation, Hook
from detkit.weights.checkpoint import save_checkpoint

__all__ = ["LastCheckpointHook", "BestCheckpointHook", "EvaluatedWeightsHook", "save_run_checkpoint",
           "weights_state", "EVALUATED_DIR", "WEIGHTS_KEYS"]

EVALUATED_DIR = "evaluated"
# What best.pt and an evaluated-weights file keep of the full checkpoint: enough for detkit eval, infer
# and export and for model.weights ("best": the metric and value that made it best); no optimizer,
# scheduler, RNG or hook state, and no "train_model" (the trained weights beside a moving average).
WEIGHTS_KEYS = ("model", "config", "classes", "category_ids", "anchor_shapes", "epoch", "iteration",
                "precision", "online_anchors", "best")


def weights_state(state: dict) -> dict:
    """The entries of a full checkpoint ``state`` that :data:`WEIGHTS_KEYS` names (those present)."""
    return {key: state[key] for key in WEIGHTS_KEYS if key in state}


def save_run_checkpoint(trainer, name: str, epoch: int, *, weights_only: bool = False) -> None:
    """Write the trainer's full state (:meth:`Trainer.checkpoint_state`) as ``name`` in the run folder;
    with ``weights_only``, only its :func:`weights_state`."""
    if trainer.ctx.is_main:
        state = trainer.checkpoint_state(epoch)
        save_checkpoint(weights_state(state) if weights_only else state, trainer.paths[name])


class LastCheckpointHook(Hook):
    """last.pt, the checkpoint ``--resume`` continues from; ``trainer.last_good_checkpoint`` names it."""

    def __init__(self, every: int) -> None:
        self.every = every

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        if end.stopped_early or end.last or (end.index + 1) % self.every == 0:
            save_run_checkpoint(trainer, "last.pt", end.completed)
            trainer.last_good_checkpoint = trainer.paths["last.pt"]


class BestCheckpointHook(Hook):
    """best.pt at each improving evaluation, written weights-only (:func:`weights_state`) at once: nothing
    reads its optimizer (``--resume`` continues from last.pt). A run that never produced one (no metric
    value) gets its final weights as best.pt, so that the file always exists at the end."""

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        if evaluation.improved:
            save_run_checkpoint(trainer, "best.pt", evaluation.epoch, weights_only=True)

    def after_train(self, trainer) -> None:
        if not os.path.exists(trainer.paths["best.pt"]) and os.path.exists(trainer.paths["last.pt"]):
            save_run_checkpoint(trainer, "best.pt", trainer.epochs, weights_only=True)


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
        weights = weights_state(trainer.checkpoint_state(evaluation.epoch))
        save_checkpoint(weights, os.path.join(folder, f"epoch_{evaluation.epoch:03d}.pt"))
