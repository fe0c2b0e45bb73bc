"""The run's validation images and ground truth, found again from its config.yaml for the gallery.

Relative data paths in a config are relative to the folder the run started in; setup.json records that
folder, so ``detkit report`` run from anywhere still finds the images.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List

from detkit.data.formats import build_dataset
from detkit.errors import DetkitError
from detkit.report.run_contents import RunContents

__all__ = ["ValidationSet", "load_validation_set"]


@dataclass
class ValidationSet:
    """annotations: per image, as the evaluation reads them; paths: image_id -> absolute image file;
    category_ids: the data set's category id of each class (label k -> index k-1)."""

    annotations: List[dict]
    paths: Dict[int, str]
    category_ids: List[int]


@contextlib.contextmanager
def _working_folder(path: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _read(run: RunContents) -> ValidationSet:
    dataset = build_dataset(run.config, "val", classes=run.classes or None, log_report=False)
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    paths = {int(a["image_id"]): os.path.abspath(dataset.image_path(i)) for i, a in enumerate(annotations)}
    return ValidationSet(annotations=annotations, paths=paths, category_ids=list(dataset.category_ids))


def load_validation_set(run: RunContents) -> ValidationSet:
    """The validation split of ``run``'s config, read from the current folder or, failing that, from the
    folder the run started in (setup.json's ``cwd``).

    Raises:
        DetkitError: the run has no config, or its validation data cannot be read from either folder
            (the message says which folders were tried and why).
    """
    if run.config is None:
        raise DetkitError("the run has no readable config.yaml, so its validation images cannot be found")
    started_in = (run.setup or {}).get("cwd")
    folders = [os.getcwd()] + ([started_in] if started_in and os.path.isdir(started_in)
                               and os.path.abspath(started_in) != os.getcwd() else [])
    problems = []
    for folder in folders:
        try:
            with _working_folder(folder):
                return _read(run)
        except (DetkitError, OSError, ValueError) as exc:
            problems.append(f"from {folder}: {exc}")
    raise DetkitError("the validation data in config.yaml cannot be read (" + "; ".join(problems) + ")")
