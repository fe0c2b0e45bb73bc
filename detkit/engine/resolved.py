"""What a training run resolves as it starts: its anchor shapes and its automatic split.

They live in the run's state (the trainer's ``anchor_shapes`` and ``split_file``), never in the live
Config the user gave; :func:`resolved_config` writes them into the copy that becomes config.yaml and
every checkpoint's ``config``, so that rerunning, resuming or evaluating the run sees exactly them.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional

from detkit.anchors import AnchorSetup, fit_anchor_shapes
from detkit.config import AnchorConfig, Config, DataConfig, replace_values
from detkit.data.auto_split import SPLIT_FILE_NAME, auto_split_enabled, write_split
from detkit.modeling.anchors import resolve_anchor_shapes
from detkit.runtime import distributed as dist

__all__ = ["run_anchor_shapes", "write_run_split", "resolved_config"]


def run_anchor_shapes(settings: AnchorConfig, setup: AnchorSetup, train_set, checkpoint: Optional[dict],
                      log: Callable[[str], None] = print) -> List[List[List[float]]]:
    """The shapes a run trains with, L x A x [w, h]: the checkpoint's on a resume, else ``model.anchors.shapes``,
    else the configured fit on ``train_set``, run on rank 0 alone and sent to every process so that all of
    them train the same anchors."""

    def resolve() -> list:
        return resolve_anchor_shapes(
            checkpoint=None if checkpoint is None else checkpoint["anchor_shapes"], configured=settings.shapes,
            fit=lambda: fit_anchor_shapes(setup, train_set, log=log), mode=settings.mode, sizes=settings.sizes,
            ratios=settings.ratios, log=log)

    if checkpoint is not None or settings.shapes is not None:  # every process reads the same shapes
        return resolve()
    return dist.broadcast_object(resolve() if dist.get_context().is_main else None)


def write_run_split(data_cfg: DataConfig, out: str, train_set, val_set, log: Callable[[str], None] = print
                    ) -> Optional[str]:
    """With ``data.auto_split``, write the split into the run folder and return its path (else None).

    The saved config points at it, so evaluating or resuming this run uses exactly these images
    whatever happens to the folder listing.
    """
    if not auto_split_enabled(data_cfg):
        return None
    path = os.path.join(out, SPLIT_FILE_NAME)
    write_split(path, train_set, val_set, val_fraction=data_cfg.auto_split.val_fraction, seed=data_cfg.auto_split.seed)
    log(f"data: automatic split, {len(train_set)} training / {len(val_set)} validation images, written to {path}")
    return path


def resolved_config(cfg: Config, anchor_shapes: Optional[list], split_file: Optional[str], *,
                    epochs: Optional[int] = None) -> Config:
    """A copy of ``cfg`` with the run's resolved anchor shapes and split file filled in (``cfg`` is unchanged),
    and ``epochs`` as train.epochs when given (the epoch count a train.time_budget plan chose)."""
    values: dict = {"model.anchors.shapes": anchor_shapes}
    if epochs is not None:
        values["train.epochs"] = epochs
    if split_file is not None:
        values["data.auto_split.file"] = split_file
    return replace_values(cfg, values)
