"""Precise BatchNorm statistics and the periodic COCO evaluation of the validation split.

Two hooks, because the checkpoint of an epoch sits between them (:func:`detkit.engine.hook_list.
build_hooks`): last.pt must hold the statistics the evaluation used, so that a run resumed from it
continues exactly as the uninterrupted one, and it is written before the evaluation starts, so that
a run killed while evaluating keeps the epoch.
"""

from __future__ import annotations

import time
from typing import List

from detkit.engine.hooks.base import EpochEnd, Evaluation, Hook
from detkit.evaluation.evaluate import run_evaluation
from detkit.evaluation.evaluator import format_coco_table, format_per_class_table, write_json
from detkit.evaluation.precise_bn import refresh_detector_bn_stats
from detkit.runtime import distributed as dist

__all__ = ["PreciseBNHook", "EvaluationHook", "needs_final_evaluation"]


def needs_final_evaluation(trainer) -> bool:
    """Training ends with one more evaluation: it was stopped by ``train.max_iters``, or this run
    evaluated nothing (a finished run resumed)."""
    return trainer.stopped_early or trainer.metrics is None


class PreciseBNHook(Hook):
    """Re-estimates the evaluated model's BatchNorm statistics over ``num_batches`` training batches
    before every evaluation (``eval.precise_bn_batches``; every process takes part)."""

    def __init__(self, num_batches: int) -> None:
        self.num_batches = num_batches

    def refresh(self, trainer) -> None:
        tic = time.perf_counter()
        used = refresh_detector_bn_stats(trainer.eval_model, trainer.cfg, trainer.train_set, trainer.device,
                                         num_batches=self.num_batches, distributed=trainer.ctx.distributed,
                                         precision=trainer.eval_precision)
        if used:
            trainer.log(f"BatchNorm statistics re-estimated over {used} training batches "
                        f"({time.perf_counter() - tic:.0f} s)")

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        if end.evaluate or end.stopped_early:
            self.refresh(trainer)

    def after_train(self, trainer) -> None:
        # A stopped run was refreshed at the end of its last epoch, with the same weights.
        if needs_final_evaluation(trainer) and not trainer.stopped_early:
            self.refresh(trainer)


class EvaluationHook(Hook):
    """Evaluates ``trainer.eval_model`` on the validation split when an epoch asks for it and at the
    end; sets ``trainer.metrics`` and ``trainer.best_value``, tells every hook (``after_evaluation``),
    and at the end writes eval.json and detections.json and prints the COCO and per-class tables.

    Rank 0 evaluates the whole split with the bare model (no collectives), so the numbers are those
    of a single process; the other ranks wait for it and get ``{}`` as metrics.
    """

    def __init__(self) -> None:
        self.results: List[dict] = []

    def evaluate(self, trainer, epoch: int) -> None:
        if not trainer.ctx.is_main:
            dist.barrier()
            trainer.metrics = {}
            return
        metrics, self.results = run_evaluation(trainer.eval_model, trainer.val_set, trainer.cfg, trainer.device,
                                               progress=not trainer.quiet, precision=trainer.eval_precision)
        dist.barrier()
        value = metrics["coco"].get(trainer.cfg.eval.best_metric)
        improved = value is not None and (trainer.best_value is None or value > trainer.best_value)
        if improved:
            trainer.best_value = value
        trainer.metrics = metrics
        trainer.broadcast("after_evaluation", Evaluation(epoch=epoch, iteration=trainer.iteration, metrics=metrics,
                                                         results=self.results, improved=improved))
        coco = metrics["coco"]
        trainer.log(f"eval at epoch {epoch}: mAP {coco['mAP']:.4f}  AP50 {coco['AP50']:.4f}  AP75 {coco['AP75']:.4f}")

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        if end.evaluate:
            self.evaluate(trainer, end.index + 1)

    def after_train(self, trainer) -> None:
        if needs_final_evaluation(trainer):
            self.evaluate(trainer, min(trainer.epoch + 1, trainer.epochs))
        if not trainer.ctx.is_main:
            return
        write_json(trainer.metrics, trainer.paths["eval.json"])
        write_json(self.results, trainer.paths["detections.json"])
        trainer.log("COCO metrics on the validation split:\n" + format_coco_table(trainer.metrics))
        trainer.log("per class:\n" + format_per_class_table(trainer.metrics))
