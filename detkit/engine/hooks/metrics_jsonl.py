"""metrics.jsonl: every record of the run (:mod:`detkit.engine.hooks.records`) as one JSON line."""

from __future__ import annotations

import json
import os

from detkit.atomic_io import atomic_open
from detkit.engine.hooks.records import RecordHook
from detkit.engine.metrics_log import drop_records_after, read_records

__all__ = ["MetricsLogHook"]


class MetricsLogHook(RecordHook):
    """Appends each record to ``path`` (rank 0 only: build it there alone).

    On resume, the records logged after the checkpoint's iteration (work the stopped run lost, which
    is trained again now) are dropped first, so the file reads as the uninterrupted run's; an
    evaluation the resumed run repeats at an iteration already logged (the final one, when the run
    was stopped after it) is not logged twice. A fresh start (no resume) replaces a log left in the
    folder, e.g. by a run killed before its first checkpoint.
    """

    def __init__(self, path: str, log_every: int) -> None:
        super().__init__(log_every)
        self.path = path
        self.resumed = False
        self.logged_evaluations: set = set()  # iterations whose eval record is in the kept log

    def load_checkpoint(self, trainer, checkpoint: dict) -> None:
        self.resumed = True
        dropped = drop_records_after(self.path, int(checkpoint["iteration"]))
        if dropped:
            trainer.log(f"metrics.jsonl: dropped {dropped} record(s) logged after the checkpoint's iteration "
                        f"{int(checkpoint['iteration'])} (work lost when the run stopped; it is trained again now)")
        self.logged_evaluations = {r.get("iteration") for r in read_records(self.path) if r.get("type") == "eval"}

    def before_train(self, trainer) -> None:
        if not self.resumed and os.path.exists(self.path):
            with atomic_open(self.path, "w"):
                pass
            trainer.log(f"metrics.jsonl: the log found in {os.path.dirname(self.path) or '.'} was replaced "
                        f"(this run starts fresh; --resume continues a run instead)")

    def write(self, record: dict) -> None:
        if record.get("type") == "eval" and record.get("iteration") in self.logged_evaluations:
            return  # the same deterministic evaluation of the same weights, logged before the stop
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
