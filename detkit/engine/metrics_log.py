"""metrics.jsonl on resume: drop the records of work that the checkpoint does not hold.

A run killed between two checkpoints has logged iterations that its ``last.pt`` does not contain.
Resuming trains those iterations again, so without a cut the log would hold them twice (once from the
lost work, once from the repeat), and plots and reports built from it would show a jagged, doubled
stretch. After a resume the log must read as the log of the uninterrupted run: every record up to the
checkpoint's iteration, then the new ones.
"""

import json
import os

from detkit.vis import read_metrics_log

__all__ = ["drop_records_after"]


def drop_records_after(path: str, iteration: int) -> int:
    """Rewrite the metrics log at ``path`` without the records past ``iteration``; return how many went.

    Records without an ``iteration`` field are kept. A torn last line (the process died mid-write) is
    dropped and counted. The rewrite goes through a temporary file and ``os.replace``, so a crash during
    it leaves either the old log or the new one, never a half-written file. A missing log is not an
    error (0 dropped): a run may be resumed from a checkpoint copied without its log.
    """
    if not os.path.exists(path):
        return 0
    with open(path, "r", encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    kept = [r for r in read_metrics_log(path) if int(r.get("iteration", 0)) <= iteration]
    dropped = total - len(kept)
    if dropped == 0:
        return 0
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for record in kept:
            f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return dropped
