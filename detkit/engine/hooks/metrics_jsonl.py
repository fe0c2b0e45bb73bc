"""metrics.jsonl: every record of the run (:mod:`detkit.engine.hooks.records`) as one JSON line."""

from __future__ import annotations

import json

from detkit.engine.hooks.records import RecordHook
from detkit.engine.metrics_log import drop_records_after

__all__ = ["MetricsLogHook"]


class MetricsLogHook(RecordHook):
    """Appends each record to ``path`` (rank 0 only: build it there alone).

    On resume, the records logged after the checkpoint's iteration (work the stopped run lost, which
    is trained again now) are dropped first, so the file reads as the uninterrupted run's.
    """

    def __init__(self, path: str, log_every: int) -> None:
        super().__init__(log_every)
        self.path = path

    def load_checkpoint(self, trainer, checkpoint: dict) -> None:
        dropped = drop_records_after(self.path, int(checkpoint["iteration"]))
        if dropped:
            trainer.log(f"metrics.jsonl: dropped {dropped} record(s) logged after the checkpoint's iteration "
                        f"{int(checkpoint['iteration'])} (work lost when the run stopped; it is trained again now)")

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
