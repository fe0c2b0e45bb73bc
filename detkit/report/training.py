"""Training as ``detkit train`` and ``detkit.train`` do it: the run, then its report.

The trainer (detkit.engine) knows nothing of reports, which sit above it; this is where the two meet.
With ``output.report`` (on by default) rank 0 writes ``report.html`` into the run folder once training
has ended. A report that cannot be written costs one line, never the finished run.
"""

from __future__ import annotations

from typing import Callable, Union

from detkit.config import Config, load_config
from detkit.engine import trainer as engine_trainer
from detkit.errors import DetkitError
from detkit.report.run_report import write_report
from detkit.runtime.distributed import launch_rank

__all__ = ["train"]


def train(cfg: Union[Config, str], *, resume: bool = False, quiet: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Train as ``cfg`` (a Config, or the path of a YAML config) says, then write the run report
    (``output.report``); returns the final evaluation metrics (eval.json's content)."""
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    metrics = engine_trainer.train(cfg, resume=resume, quiet=quiet, log=log)  # looked up now: patchable
    # The launcher's rank: the process group is gone by now, and rank 0 alone writes the run folder.
    if cfg.output.report and launch_rank() == 0:
        try:
            write_report(cfg.output.dir, log=log)
        except (DetkitError, OSError, ValueError) as exc:
            log(f"report: not written ({exc}); the run itself is complete: `detkit report {cfg.output.dir}` "
                f"tries again")
    return metrics
