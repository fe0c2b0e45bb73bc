"""plots/*.png at the end of training: loss and LR curves, precision-recall curves, confusion matrix."""

from __future__ import annotations

from detkit.engine.hooks.base import Hook
from detkit.engine.metrics_log import read_records

__all__ = ["PlotsHook"]


class PlotsHook(Hook):
    """Draws the run's plots from metrics.jsonl and the final evaluation (rank 0 only: build it there
    alone; after the evaluation and the metrics log in the hook list)."""

    def after_train(self, trainer) -> None:
        from detkit.vis import write_training_plots  # matplotlib: imported only when plotting

        write_training_plots(trainer.out, read_records(trainer.paths["metrics.jsonl"]), trainer.metrics,
                             trainer.classes)
