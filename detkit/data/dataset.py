"""DetectionDataset: the base every detkit data set shares (annotations in memory, images decoded lazily).

A data set is the annotations of its images, read once at construction (annotation files parsed,
boxes converted and sanitised, image sizes known) and held as one compact
:class:`~detkit.data.index.AnnotationIndex` (flat arrays, so DataLoader workers share them without
copying), plus the image files, decoded only in ``__getitem__``. Every data set returns the same
sample (see :data:`SAMPLE_KEYS`)::

    {"image": np.ndarray (H, W, 3) uint8 RGB,
     "boxes": np.float32 (N, 4) x1, y1, x2, y2 absolute pixels (continuous coordinates),
     "labels": np.int64 (N,) in 1..K,
     "ignore_boxes": np.float32 (G, 4) regions the assigner ignores (VOC difficult / COCO crowd),
     "ignore_labels": np.int64 (G,) the class of each ignore region (for evaluation),
     "image_id": int, "orig_size": (h, w), "file_name": str}

``get_annotation(i)`` returns the same dict without "image" and never decodes an image; one image's
annotation as an object is an :class:`~detkit.data.index.ImageRecord`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import List, Optional, Tuple, Union

from torch.utils.data import Dataset

from detkit.data.image_io import checked_image_size, describe_orientation, is_valid_orientation, read_image
from detkit.data.index import AnnotationIndex, ImageRecord
from detkit.data.report import DataReport
from detkit.errors import DataError

__all__ = ["DetectionDataset", "RecordsView", "SAMPLE_KEYS", "resolve_path", "probe_image",
           "read_image_header", "settle_bad_annotations"]

SAMPLE_KEYS = ("image", "boxes", "labels", "ignore_boxes", "ignore_labels", "image_id", "orig_size", "file_name")


class RecordsView(Sequence):
    """The images of an :class:`AnnotationIndex` as a read-only sequence of :class:`ImageRecord`
    (each built on access; ``view + other`` gives a list)."""

    def __init__(self, index: AnnotationIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._index.record(k) for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for {len(self)} images")
        return self._index.record(i % len(self))

    def __add__(self, other) -> List[ImageRecord]:
        return list(self) + list(other)


class DetectionDataset(Dataset):
    """Annotations (a compact index) + class list + report; decodes images on access.

    Attributes:
        classes: class names, label i is ``classes[i - 1]`` (no background entry).
        category_ids: label i -> category id ``category_ids[i - 1]`` (for COCO results).
        report: the fixes applied while reading (see :class:`DataReport`).
        index: the :class:`~detkit.data.index.AnnotationIndex` of all images.
        records: the same as a read-only sequence of :class:`ImageRecord` (built on access).
    """

    def __init__(self, *, records: Optional[Sequence[ImageRecord]] = None, classes: Sequence[str],
                 category_ids: Optional[Sequence[int]] = None, report: Optional[DataReport] = None,
                 name: str = "", index: Optional[AnnotationIndex] = None) -> None:
        if (records is None) == (index is None):
            raise ValueError("give exactly one of records and index")
        self.index = index if index is not None else AnnotationIndex.from_records(records)
        self.classes: List[str] = list(classes)
        self.category_ids: List[int] = (list(category_ids) if category_ids is not None
                                        else list(range(1, len(self.classes) + 1)))
        if len(self.category_ids) != len(self.classes):
            raise ValueError("category_ids must have one entry per class")
        self.report = report if report is not None else DataReport(name)
        self.name = name

    @property
    def records(self) -> RecordsView:
        return RecordsView(self.index)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def image_sizes(self) -> List[Tuple[int, int]]:
        """(h, w) of every image, without decoding any."""
        return [(int(h), int(w)) for h, w in self.index.sizes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, index: int) -> str:
        return self.index.paths.get(index)

    def get_annotation(self, index: int) -> dict:
        """The sample of image `index` without "image" (copies; nothing is decoded)."""
        ix = self.index
        b, g = ix.box_slice(index), ix.ignore_slice(index)
        return {
            "boxes": ix.boxes[b].copy(),
            "labels": ix.labels[b].copy(),
            "ignore_boxes": ix.ignore_boxes[g].copy(),
            "ignore_labels": ix.ignore_labels[g].copy(),
            "image_id": int(ix.image_ids[index]),
            "orig_size": (int(ix.sizes[index, 0]), int(ix.sizes[index, 1])),
            "file_name": ix.file_names.get(index),
        }

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a data set of {len(self)} images")
        index = index % len(self)
        sample = self.get_annotation(index)
        path, size = self.image_path(index), sample["orig_size"]
        try:
            image = read_image(path)
        except DataError as exc:
            # The header checks when the data set was read (what data.skip_bad_images acts on) passed,
            # so that setting cannot skip this file: say what can.
            raise DataError(f"{exc}; fix or remove it (`detkit lint` decodes every image of the data set "
                            f"and lists each one that fails; data.skip_bad_images skips only the images "
                            f"whose header or end marker is bad)") from None
        if image.shape[:2] != size:
            raise DataError(
                f"image file '{path}' decodes to {image.shape[1]}x{image.shape[0]} "
                f"(w x h) but its annotation says {size[1]}x{size[0]}; "
                f"boxes cannot be placed reliably (run detkit lint to list such images)")
        sample["image"] = image
        return sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}: {len(self)} images, "
                f"{self.index.num_boxes} boxes, classes={self.classes})")


def resolve_path(path: str, base: Optional[str] = None) -> str:
    """`path` joined to `base` unless absolute (user paths may start with ~)."""
    path = os.path.expanduser(path)
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.normpath(path)


def read_image_header(path: str) -> Union[Tuple[int, int, int], str]:
    """(h, w, EXIF orientation) from an image file's header (after the cheap truncation check), or the
    message saying why the file is missing, truncated or unreadable. Reads no pixels."""
    try:
        return checked_image_size(path)
    except DataError as exc:
        return str(exc)


def probe_image(path: str, *, skip_bad_images: bool, report: DataReport,
                context: str = "", header: Union[Tuple[int, int, int], str, None] = None
                ) -> Optional[Tuple[int, int, int]]:
    """(h, w, EXIF orientation) of an image file without decoding it, or None when it is missing,
    truncated or unreadable and ``skip_bad_images`` (counted as bad_image_skipped). An EXIF orientation
    2..8 (applied on load) is counted as exif_rotated; an invalid tag (any value outside 1..8, see
    :func:`~detkit.data.image_io.read_image_size`), ignored on load, as exif_invalid_ignored.

    Args:
        header: what :func:`read_image_header` returned for `path` (read ahead or cached by the
            caller); None reads it here.

    Raises:
        DataError: a bad image without ``skip_bad_images`` (``context`` is added to the message).
    """
    header = read_image_header(path) if header is None else header
    if isinstance(header, str):
        if not skip_bad_images:
            raise DataError(f"{header} ({context + '; ' if context else ''}set data.skip_bad_images=true to skip "
                            f"bad images)")
        report.add("bad_image_skipped", example=header)
        return None
    h, w, orientation = header
    if not is_valid_orientation(orientation):
        report.add("exif_invalid_ignored", example=f"{path} (orientation tag {describe_orientation(orientation)})")
    elif orientation != 1:
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
