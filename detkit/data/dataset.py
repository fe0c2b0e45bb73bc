"""DetectionDataset: the base every detkit data set shares (records in memory, images decoded lazily).

A data set is a list of per-image records read once at construction (annotation files parsed,
boxes converted and sanitised, image sizes known) plus the image files, decoded only in
``__getitem__``. Every data set returns the same sample (see :data:`SAMPLE_KEYS`)::

    {"image": np.ndarray (H, W, 3) uint8 RGB,
     "boxes": np.float32 (N, 4) x1, y1, x2, y2 absolute pixels (continuous coordinates),
     "labels": np.int64 (N,) in 1..K,
     "ignore_boxes": np.float32 (G, 4) regions the assigner ignores (VOC difficult / COCO crowd),
     "ignore_labels": np.int64 (G,) the class of each ignore region (for evaluation),
     "image_id": int, "orig_size": (h, w), "file_name": str}

``get_annotation(i)`` returns the same dict without "image" and never decodes an image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import Dataset

from detkit.data.image_io import read_image, read_image_size, truncation_problem
from detkit.data.report import DataReport
from detkit.errors import DataError

__all__ = ["ImageRecord", "DetectionDataset", "SAMPLE_KEYS", "resolve_path", "probe_image", "settle_bad_annotations"]

SAMPLE_KEYS = ("image", "boxes", "labels", "ignore_boxes", "ignore_labels", "image_id", "orig_size", "file_name")


@dataclass
class ImageRecord:
    """One image's annotation, already in detkit's convention.

    Attributes:
        image_id: unique int id (COCO: the JSON's id; VOC: 1-based position in the data set).
        path: image file path as opened.
        file_name: the name shown to users and written to COCO JSON (relative to the image folder).
        size: (h, w) of the decoded, EXIF-applied image.
        boxes: float32 (N, 4); labels: int64 (N,); ignore_boxes: float32 (G, 4); ignore_labels: int64 (G,).
    """

    image_id: int
    path: str
    file_name: str
    size: Tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    ignore_boxes: np.ndarray
    ignore_labels: np.ndarray


class DetectionDataset(Dataset):
    """Records + class list + report; decodes images on access.

    Attributes:
        classes: class names, label i is ``classes[i - 1]`` (no background entry).
        category_ids: label i -> category id ``category_ids[i - 1]`` (for COCO results).
        report: the fixes applied while reading (see :class:`DataReport`).
        records: one :class:`ImageRecord` per image.
    """

    def __init__(self, *, records: Sequence[ImageRecord], classes: Sequence[str],
                 category_ids: Optional[Sequence[int]] = None, report: Optional[DataReport] = None,
                 name: str = "") -> None:
        self.records: List[ImageRecord] = list(records)
        self.classes: List[str] = list(classes)
        self.category_ids: List[int] = (list(category_ids) if category_ids is not None
                                        else list(range(1, len(self.classes) + 1)))
        if len(self.category_ids) != len(self.classes):
            raise ValueError("category_ids must have one entry per class")
        self.report = report if report is not None else DataReport(name)
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_sizes(self) -> List[Tuple[int, int]]:
        """(h, w) of every image, without decoding any."""
        return [r.size for r in self.records]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, index: int) -> str:
        return self.records[index].path

    def get_annotation(self, index: int) -> dict:
        """The sample of image `index` without "image" (copies; nothing is decoded)."""
        r = self.records[index]
        return {
            "boxes": r.boxes.copy(),
            "labels": r.labels.copy(),
            "ignore_boxes": r.ignore_boxes.copy(),
            "ignore_labels": r.ignore_labels.copy(),
            "image_id": int(r.image_id),
            "orig_size": tuple(r.size),
            "file_name": r.file_name,
        }

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} images")
        sample = self.get_annotation(index)
        image = read_image(self.records[index].path)
        if image.shape[:2] != tuple(self.records[index].size):
            raise DataError(
                f"image file '{self.records[index].path}' decodes to {image.shape[1]}x{image.shape[0]} "
                f"(w x h) but its annotation says {self.records[index].size[1]}x{self.records[index].size[0]}; "
                f"boxes cannot be placed reliably (run tools/lint_data.py to list such images)")
        sample["image"] = image
        return sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}: {len(self)} images, "
                f"{sum(len(r.boxes) for r in self.records)} boxes, classes={self.classes})")


def resolve_path(path: str, base: Optional[str] = None) -> str:
    """`path` joined to `base` unless absolute (user paths may start with ~)."""
    path = os.path.expanduser(path)
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(path)


def probe_image(path: str, *, skip_bad_images: bool, report: DataReport,
                context: str = "") -> Optional[Tuple[int, int, int]]:
    """(h, w, EXIF orientation) of an image file without decoding it, or None when it is missing,
    truncated or unreadable and ``skip_bad_images`` (counted as bad_image_skipped); an EXIF rotation
    is counted as exif_rotated.

    Raises:
        DataError: a bad image without ``skip_bad_images`` (``context`` is added to the message).
    """
    try:
        problem = truncation_problem(path)
        if problem is not None:
            raise DataError(f"image file '{path}': {problem}")
        h, w, orientation = read_image_size(path)
    except DataError as exc:
        if not skip_bad_images:
            raise DataError(f"{exc} ({context + '; ' if context else ''}set data.skip_bad_images=true to skip "
                            f"bad images)") from None
        report.add("bad_image_skipped", example=str(exc))
        return None
    if orientation != 1:
        report.add("exif_rotated", example=f"{path} (orientation {orientation})")
    return h, w, orientation


def settle_bad_annotations(bad: Sequence[str], total: int, name: str, *, skip: bool, report: DataReport,
                           what: str = "annotation files") -> None:
    """Every unreadable or invalid annotation file of a data set at once: a DataError listing them all
    (a user fixes them after one run instead of meeting them one at a time), or, with ``skip``
    (data.skip_bad_annotations), each counted as bad_annotation_skipped."""
    if bad and not skip:
        raise DataError(f"{len(bad)} of {total} {what} of {name} cannot be used (fix them, or set "
                        f"data.skip_bad_annotations=true to skip and count them):\n  " + "\n  ".join(bad))
    for message in bad:
        report.add("bad_annotation_skipped", example=message)
