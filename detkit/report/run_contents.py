"""What a run folder holds, read for its report without ever failing on a partial run.

A run killed at any point leaves some of config.yaml, setup.json, metrics.jsonl, last.pt, eval.json,
detections.json and best.pt behind (in roughly that order). :func:`read_run` reads each file that is
there and readable, and for each one that is not says in one line what that means for the report
("eval.json: missing: the run ended before its final evaluation; no COCO table, PR curves or gallery").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

from detkit.config import Config, load_config
from detkit.engine.metrics_log import read_records
from detkit.engine.setup_record import SETUP_FILE_NAME
from detkit.errors import DetkitError

__all__ = ["RunContents", "read_run"]

# What is lost without each file, in the order a run writes them.
_CONSEQUENCES = {
    "config.yaml": "no config, model summary or gallery (the validation images are found through it)",
    SETUP_FILE_NAME: "no data report, anchor table or device (older runs have none)",
    "metrics.jsonl": "no loss, learning-rate or mAP curves",
    "eval.json": "no COCO table, per-class AP, PR curves or confusion matrix",
    "detections.json": "no error analysis or gallery",
}


@dataclass
class RunContents:
    """The readable parts of one run folder.

    Attributes:
        path: the folder. name: its base name (how the report titles it).
        config / config_text: the resolved config and config.yaml's text (None when missing or invalid).
        setup: setup.json (data reports, anchors, device, precision) or None.
        records: metrics.jsonl's records (train / epoch / eval), [] when missing.
        eval_metrics: eval.json (the final evaluation) or None. detections: detections.json or None.
        transfer: transfer.json (what model.weights gave) or None.
        checkpoints: {"best.pt" | "last.pt": size in bytes} of those present.
        missing: one line per file that is absent or unreadable, with what the report lacks for it.
    """

    path: str
    name: str
    config: Optional[Config] = None
    config_text: Optional[str] = None
    setup: Optional[dict] = None
    records: List[dict] = field(default_factory=list)
    eval_metrics: Optional[dict] = None
    detections: Optional[list] = None
    transfer: Optional[dict] = None
    checkpoints: dict = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)

    @property
    def classes(self) -> List[str]:
        """The class names, from setup.json, else eval.json's per-class table, else the config."""
        if self.setup and self.setup.get("data", {}).get("classes"):
            return list(self.setup["data"]["classes"])
        if self.eval_metrics and isinstance(self.eval_metrics.get("per_class"), dict):
            return list(self.eval_metrics["per_class"])
        if self.config is not None and self.config.data.classes:
            return list(self.config.data.classes)
        return []

    def records_of(self, kind: str) -> List[dict]:
        """metrics.jsonl's records of one ``type`` (train, epoch, eval)."""
        return [r for r in self.records if r.get("type") == kind]


def _read_json(path: str, kind: type):
    """(value, problem): the JSON of ``path`` when it is there, parses and has the expected type."""
    if not os.path.exists(path):
        return None, "missing"
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(value, kind):
        return None, f"not a JSON {kind.__name__}"
    return value, None


def read_run(path: str) -> RunContents:
    """Read the run folder ``path`` (see :class:`RunContents`).

    Raises:
        DetkitError: ``path`` is not a folder, or holds none of a run's files.
    """
    if not os.path.isdir(path):
        raise DetkitError(f"run folder '{path}' does not exist or is not a folder; give the output.dir of a "
                          f"training run (e.g. runs/synthetic)")
    run = RunContents(path=path, name=os.path.basename(os.path.normpath(os.path.abspath(path))))
    known = tuple(_CONSEQUENCES) + ("last.pt", "best.pt", "transfer.json")
    if not any(os.path.exists(os.path.join(path, name)) for name in known):
        raise DetkitError(f"'{path}' holds none of a training run's files ({', '.join(known)}); give the "
                          f"output.dir of a training run")
    _read_config(run)
    run.setup, problem = _read_json(os.path.join(path, SETUP_FILE_NAME), dict)
    _note(run, SETUP_FILE_NAME, problem)
    metrics_path = os.path.join(path, "metrics.jsonl")
    run.records = [r for r in read_records(metrics_path) if isinstance(r, dict)]
    _note(run, "metrics.jsonl", None if run.records else ("missing" if not os.path.exists(metrics_path)
                                                         else "no readable record"))
    run.eval_metrics, problem = _read_json(os.path.join(path, "eval.json"), dict)
    _note(run, "eval.json", problem)
    run.detections, problem = _read_json(os.path.join(path, "detections.json"), list)
    _note(run, "detections.json", problem)
    run.transfer, _ = _read_json(os.path.join(path, "transfer.json"), dict)
    run.checkpoints = {name: os.path.getsize(os.path.join(path, name)) for name in ("best.pt", "last.pt")
                       if os.path.isfile(os.path.join(path, name))}
    return run


def _read_config(run: RunContents) -> None:
    config_path = os.path.join(run.path, "config.yaml")
    if not os.path.exists(config_path):
        _note(run, "config.yaml", "missing")
        return
    try:
        with open(config_path, encoding="utf-8") as f:
            run.config_text = f.read()
        run.config = load_config(config_path)
    except (OSError, UnicodeDecodeError, DetkitError) as exc:
        _note(run, "config.yaml", f"unreadable ({exc})")


def _note(run: RunContents, name: str, problem: Optional[str]) -> None:
    if problem:
        run.missing.append(f"{name}: {problem}: {_CONSEQUENCES[name]}")
