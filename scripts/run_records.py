"""The metrics.jsonl records of a finished run folder, as the report scripts read them.

Shared by ``scripts/p1_report.py`` and ``scripts/recipe_report.py``; not a script itself.
"""

from __future__ import annotations

import os

from detkit.engine.metrics_log import read_records


def read_run_records(run_dir: str) -> list:
    """The records of ``run_dir``'s metrics.jsonl (FileNotFoundError when the run has none)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return read_records(path)
