"""The records a run logs — one per ``train.log_every`` iterations, one per epoch, one per
evaluation — built once here and written by every sink (metrics.jsonl, TensorBoard).

Record keys (metrics.jsonl's format, read by detkit.vis and scripts/p1_report.py):
    train: type, epoch, iteration, lr, time, img_per_s, every loss key, loss
    epoch: type, epoch, iteration, time, seconds, img_per_s
    eval:  type, epoch, iteration, time, the 12 COCO numbers, voc_mAP50, per_class_AP {class: AP},
           val_loss (when measured)
"""

from __future__ import annotations

import time

from detkit.engine.hooks.base import EpochEnd, Evaluation, Hook, StepInfo

__all__ = ["RecordHook", "train_record", "epoch_record", "eval_record"]


def train_record(step: StepInfo) -> dict:
    return {"type": "train", "epoch": step.epoch, "iteration": step.iteration, "lr": step.lr, "time": time.time(),
            "img_per_s": step.img_per_s, **step.losses}


def epoch_record(end: EpochEnd, iteration: int) -> dict:
    return {"type": "epoch", "epoch": end.index + 1, "iteration": iteration, "time": time.time(),
            "seconds": end.seconds, "img_per_s": end.img_per_s}


def eval_record(evaluation: Evaluation) -> dict:
    metrics = evaluation.metrics
    record = {"type": "eval", "epoch": evaluation.epoch, "iteration": evaluation.iteration, "time": time.time(),
              **metrics["coco"], "voc_mAP50": metrics["voc"]["mAP50_area"],
              "per_class_AP": {name: v["AP"] for name, v in metrics["per_class"].items()}}
    if "val_loss" in metrics:
        record["val_loss"] = metrics["val_loss"]["loss"]
    return record


class RecordHook(Hook):
    """Builds the records at their points of the loop and hands each to :meth:`write`.

    Args:
        log_every: a train record after iteration 1 and every ``log_every`` iterations.
    """

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every

    def write(self, record: dict) -> None:
        raise NotImplementedError

    def after_step(self, trainer, step: StepInfo) -> None:
        if step.iteration % self.log_every == 0 or step.iteration == 1:
            self.write(train_record(step))

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        if not end.stopped_early:  # a part-epoch is repeated by a resume: its record would be written twice
            self.write(epoch_record(end, trainer.iteration))

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        self.write(eval_record(evaluation))
