"""TensorBoard event files in the run folder (``output.tensorboard: true``): the scalars of
metrics.jsonl, so ``tensorboard --logdir runs/`` shows every run by its folder name.

Tags: ``train/<key>`` (each loss, loss, lr, img_per_s) at each logged iteration; ``epoch/seconds``
and ``epoch/img_per_s``; ``eval/<key>`` (the COCO numbers, voc_mAP50, val_loss) and
``eval_AP/<class>`` per evaluation. The step is the iteration and the wall time the record's.
"""

from __future__ import annotations

from typing import Optional

from detkit.engine.hooks.records import RecordHook

__all__ = ["TensorBoardHook"]

_NOT_SCALARS = ("type", "epoch", "iteration", "time")


class TensorBoardHook(RecordHook):
    """Writes each record's numbers as scalars (rank 0 only: build it there alone).

    A resumed run purges the events logged after the checkpoint's iteration, as metrics.jsonl drops
    its records.
    """

    def __init__(self, log_dir: str, log_every: int) -> None:
        super().__init__(log_every)
        self.log_dir = log_dir
        self.purge_step: Optional[int] = None
        self.writer = None

    def load_checkpoint(self, trainer, checkpoint: dict) -> None:
        self.purge_step = int(checkpoint["iteration"]) + 1

    def before_train(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package: import on use

        # A fresh start purges from step 0: the events of a run killed in this folder are not kept.
        self.writer = SummaryWriter(log_dir=self.log_dir,
                                    purge_step=self.purge_step if self.purge_step is not None else 0)

    def write(self, record: dict) -> None:
        group = record["type"]  # train, epoch or eval
        step, walltime = record["iteration"], record["time"]
        for key, value in record.items():
            if key in _NOT_SCALARS:
                continue
            if isinstance(value, dict):  # per_class_AP
                for name, ap in value.items():
                    if ap is not None:
                        self.writer.add_scalar(f"{group}_AP/{name}", ap, step, walltime=walltime)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{group}/{key}", value, step, walltime=walltime)
        if group != "train":
            self.writer.flush()

    def after_train(self, trainer) -> None:
        self.writer.close()
