"""Automatic train / val split for a data set that comes without one (``data.auto_split``).

The split is by image and deterministic: a function of the data set's file list, ``val_fraction``
and ``seed``. It is stratified greedily: classes are visited from the rarest (fewest images) up, and
each class that appears in at least two images gets at least one of them on each side while the
validation side has room; the remaining validation slots are filled in a seeded random order. So a
class with one image can only be on one side, and every class with two or more appears on both
whenever ``round(val_fraction * N)`` leaves room.

:func:`write_split` stores the result (file names per side, the settings) as JSON in the run folder;
``data.auto_split.file`` reads such a file back, so a later evaluation or another run uses exactly
the same images even if the settings or the folder listing change. :func:`auto_split_side` applies
either rule to the whole data set (detkit/data/formats.py reads it) and returns one side.
"""

from __future__ import annotations

import json
import os
from typing import List, Sequence, Tuple

import numpy as np

from detkit.atomic_io import write_json_atomic
from detkit.config import AutoSplitConfig
from detkit.data.dataset import DetectionDataset, resolve_path
from detkit.errors import ConfigError

__all__ = ["stratified_split", "split_from_file", "subset", "write_split", "image_keys", "auto_split_enabled",
           "auto_split_side", "SPLIT_FILE_NAME"]

SPLIT_FILE_NAME = "split.json"


def auto_split_enabled(data_cfg) -> bool:
    """True when ``data.auto_split`` divides data.train's source (a fraction or a split file is set)."""
    return data_cfg.auto_split.val_fraction is not None or data_cfg.auto_split.file is not None


def auto_split_side(whole: DetectionDataset, settings: AutoSplitConfig, split: str) -> DetectionDataset:
    """Side `split` ('train' or 'val') of `whole` (data.train's source, read whole) divided by
    ``settings`` (data.auto_split): the images its split file places there, else the stratified split's."""
    if settings.file is not None:
        train_idx, val_idx = split_from_file(whole, resolve_path(settings.file))
    else:
        labels = [whole.index.labels[whole.index.box_slice(i)] for i in range(len(whole))]
        train_idx, val_idx = stratified_split(labels, settings.val_fraction, settings.seed)
    return subset(whole, train_idx if split == "train" else val_idx, split)


def stratified_split(labels_per_image: Sequence[np.ndarray], val_fraction: float,
                     seed: int) -> Tuple[List[int], List[int]]:
    """(train indices, val indices), both sorted; see the module docstring for the rule.

    Args:
        labels_per_image: per image, the labels of its boxes (any ints; an empty array for a negative image).
        val_fraction: in (0, 1); the validation side gets ``round(val_fraction * N)`` images, at least one
            and at most N - 1 (N >= 2 required).
    """
    n = len(labels_per_image)
    if n < 2:
        raise ConfigError(f"data.auto_split needs at least 2 images to split, the data set has {n}")
    num_val = min(n - 1, max(1, int(round(val_fraction * n))))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n).tolist()  # the seeded order in which images are considered
    side = {}  # index -> "train" | "val"
    images_of: dict = {}
    for i in order:
        for label in np.unique(np.asarray(labels_per_image[i])).tolist():
            images_of.setdefault(int(label), []).append(i)
    for label in sorted(images_of, key=lambda c: (len(images_of[c]), c)):  # rarest class first
        members = images_of[label]
        if len(members) < 2:
            continue
        sides = {side.get(i) for i in members}
        free = [i for i in members if i not in side]
        if "val" not in sides and free and sum(s == "val" for s in side.values()) < num_val:
            side[free.pop(0)] = "val"
        if "train" not in sides and free:
            side[free.pop(0)] = "train"
    room = num_val - sum(s == "val" for s in side.values())
    for i in order:
        if i not in side:
            side[i] = "val" if room > 0 else "train"
            room -= side[i] == "val"
    return sorted(i for i in range(n) if side[i] == "train"), sorted(i for i in range(n) if side[i] == "val")


def split_from_file(dataset: DetectionDataset, path: str) -> Tuple[List[int], List[int]]:
    """(train indices, val indices) of the images a split.json lists, matched by file name.

    Raises:
        ConfigError: unreadable file, or images of the data set that the file does not place (or the
            other way round): the split would silently change.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
        train, val = set(data["train"]), set(data["val"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"key 'data.auto_split.file' = '{path}': not a detkit split.json ({exc})") from None
    names = image_keys(dataset.records)
    unplaced = [name for name in names if name not in train and name not in val]
    missing = sorted((train | val) - set(names))
    if unplaced or missing:
        raise ConfigError(f"key 'data.auto_split.file' = '{path}' does not match the data set {dataset.name}: "
                          f"{len(unplaced)} of its images are not in the file (e.g. {unplaced[:3]}), "
                          f"{len(missing)} listed images are not in the data set (e.g. {missing[:3]})")
    return [i for i, n in enumerate(names) if n in train], [i for i, n in enumerate(names) if n in val]


def subset(dataset: DetectionDataset, indices: Sequence[int], side: str) -> DetectionDataset:
    """The images ``indices`` of ``dataset`` as a data set of their own (same classes, ids and report)."""
    part = DetectionDataset(index=dataset.index.take(list(indices)), classes=dataset.classes,
                            category_ids=dataset.category_ids, report=dataset.report,
                            name=f"{dataset.name} [auto {side}]")
    part.bad_annotations = list(getattr(dataset, "bad_annotations", []))
    return part


def write_split(path: str, train: DetectionDataset, val: DetectionDataset, *, val_fraction, seed: int) -> None:
    """split.json: the file names on each side and how they were chosen (read back by split_from_file)."""
    keys = image_keys(train.records + val.records)
    write_json_atomic({"val_fraction": val_fraction, "seed": int(seed), "num_train": len(train),
                       "num_val": len(val), "train": keys[:len(train)], "val": keys[len(train):]},
                      os.fspath(path), indent=1)


def image_keys(records) -> List[str]:
    """What names each image in split.json: its file name, or its path where file names repeat (two roots)."""
    names = [r.file_name for r in records]
    if len(set(names)) == len(names):
        return names
    return [os.path.normpath(r.path) for r in records]
