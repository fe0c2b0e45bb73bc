"""setup.json: what a run found when it started, for its report.

Training prints its data reports and anchor table once, at set-up; the run report (``detkit report``)
shows them again, so they are kept in the run folder as data rather than only as log lines. Written by
rank 0 at the end of set-up, so that even a run killed in its first epoch leaves it behind.

Keys: ``version`` (detkit, torch), ``started`` (Unix time), ``device`` (e.g. "cpu: AMD EPYC ..., 2
threads"), ``world_size``, ``precision`` {train, eval}, ``parameters`` (the detector's count), ``data``
{format, classes, train: {name, images, boxes, report, summary}, val: {...}}, ``anchors`` (see
:func:`detkit.anchors.report.run_anchor_summary`; absent with a resume, whose shapes come from last.pt
and need no new measurement), ``resumed`` (bool), ``cwd`` (the folder the run's relative paths start from).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Optional

import torch

from detkit.anchors.report import run_anchor_summary
from detkit.atomic_io import write_json_atomic
from detkit.runtime.cpu import describe_cpu
from detkit.version import __version__

if TYPE_CHECKING:  # the trainer imports this module, not the other way round
    from detkit.engine.trainer import Trainer

__all__ = ["SETUP_FILE_NAME", "setup_record", "write_setup_record", "describe_device"]

SETUP_FILE_NAME = "setup.json"


def describe_device(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return f"{device}: {torch.cuda.get_device_name(device)}"
    return f"cpu: {describe_cpu()}, {torch.get_num_threads()} threads"


def _split_entry(dataset) -> dict:
    report = getattr(dataset, "report", None)
    boxes = sum(len(dataset.get_annotation(i)["labels"]) for i in range(len(dataset)))
    return {"name": getattr(report, "name", ""), "images": len(dataset), "boxes": int(boxes),
            "report": report.to_dict() if report is not None else {},
            "summary": report.summary() if report is not None else ""}


def _read_previous(path: str) -> dict:
    """The setup.json a resumed run wrote first ({} when missing or unreadable: it is rewritten)."""
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def setup_record(trainer: "Trainer", *, resumed: bool) -> dict:
    """The record of ``trainer`` after its set-up (see the module docstring for the keys)."""
    cfg = trainer.cfg
    record: dict = {
        "version": {"detkit": __version__, "torch": torch.__version__},
        "started": time.time(),
        "device": describe_device(trainer.device),
        "world_size": trainer.ctx.world_size,
        "precision": {"train": trainer.precision.name, "eval": trainer.eval_precision.name},
        "parameters": int(sum(p.numel() for p in trainer.bare_model.parameters())),
        "data": {"format": cfg.data.format, "classes": list(trainer.classes),
                 "train": _split_entry(trainer.train_set), "val": _split_entry(trainer.val_set)},
        "resumed": resumed,
        # Relative data paths in config.yaml are relative to this folder: the report finds the images from it.
        "cwd": os.getcwd(),
    }
    if not resumed:
        record["anchors"] = run_anchor_summary(trainer.anchor_setup, trainer.train_set, trainer.anchor_shapes,
                                               seed=cfg.train.seed)
    return record


def write_setup_record(trainer: "Trainer", *, resumed: bool, path: Optional[str] = None) -> str:
    """Write :func:`setup_record` to ``path`` (default: the run folder's setup.json); a resume keeps the
    first set-up's anchors and adds ``resumed``. Returns the path."""
    path = path or os.path.join(trainer.out, SETUP_FILE_NAME)
    record = setup_record(trainer, resumed=resumed)
    if resumed:
        previous = _read_previous(path)
        if "anchors" in previous:
            record["anchors"] = previous["anchors"]
    write_json_atomic(record, path)
    return path
