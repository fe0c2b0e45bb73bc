"""metrics.jsonl on resume: drop the records of work that the checkpoint does not hold.

A run killed between two checkpoints has logged iterations that its ``last.pt`` does not contain.
Resuming trains those iterations again, so without a cut the log would hold them twice (once from the
lost work, once from the repeat), and plots and reports built from it would show a jagged, doubled
stretch. After a resume the log must read as the log of the uninterrupted run: every record up to the
checkpoint's iteration, then the new ones.
"""

import json
import os

from detkit.atomic_io import atomic_open

__all__ = ["drop_records_after", "read_records"]


def drop_records_after(path: str, iteration: int) -> int:
    """Rewrite the metrics log at ``path`` without the records past ``iteration``; return how many went.

    Records without an ``iteration`` field are kept. A torn line (the process died mid-write) is
    dropped and counted. The rewrite is atomic (:func:`detkit.atomic_io.atomic_open`): a crash during
    it leaves the old log or the new one, never half of one. A missing log is not an error (0
    dropped): a run may be resumed from a checkpoint copied without its log.
    """
    if not os.path.exists(path):
        return 0
    with open(path, "r", encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(record.get("iteration", 0)) <= iteration:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines):
        return 0
    with atomic_open(path, "w") as f:
        f.writelines(kept)
    return len(lines) - len(kept)


def read_records(path: str) -> list:
    """The records of the metrics log at ``path`` (a missing file has none; torn lines are skipped)."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
