"""AnnotationIndex: every image's annotations as a few flat arrays, not one Python object per image or box.

Shape shorthand: N images, B boxes, G ignore regions (of all images together).

A data set of 118k images held as 118k record objects (each with its own small arrays and strings)
costs memory in every DataLoader worker: a forked worker shares the parent's pages until it touches
an object, and touching a Python object writes its reference count, so over an epoch each worker
copies the pages of every record it read. Here the annotations are a handful of NumPy arrays
(offsets into flat box / label arrays; strings packed into one byte buffer with their folders
interned), which a worker reads without writing, so the pages stay shared::

    image i:  boxes[box_offsets[i]:box_offsets[i + 1]]  labels[...] (same slice)
              ignore_boxes[ignore_offsets[i]:ignore_offsets[i + 1]]  ignore_labels[...]
              image_ids[i], sizes[i] = (h, w), paths.get(i), file_names.get(i)

:class:`ImageRecord` is one image's annotation as an object (what a reader builds, and what
:meth:`AnnotationIndex.record` rebuilds of one image); it lives here, beside the index that stores it,
so that dataset.py depends on this module and not the other way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["ImageRecord", "StringTable", "AnnotationIndex"]


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


class StringTable:
    """N strings as one UTF-8 byte buffer plus offsets; each string's folder (up to the last
    separator) is interned, so a folder shared by 100k files is stored once.

    Attributes:
        folders: the distinct folder prefixes (each ending with its separator, or "" for none).
        folder_index: int32 (N,) the folder of each string.
        data: uint8 buffer of the remaining parts; offsets: int64 (N + 1,) into it.
    """

    def __init__(self, folders: Sequence[str], folder_index: np.ndarray, data: np.ndarray, offsets: np.ndarray) -> None:
        self.folders = list(folders)
        self.folder_index = np.ascontiguousarray(folder_index, dtype=np.int32)
        self.data = np.ascontiguousarray(data, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)

    @classmethod
    def from_strings(cls, strings: Sequence[str]) -> "StringTable":
        folder_of: Dict[str, int] = {}
        folder_index = np.empty(len(strings), dtype=np.int32)
        tails = []
        for i, s in enumerate(strings):
            cut = max(s.rfind("/"), s.rfind(os.sep)) + 1
            folder_index[i] = folder_of.setdefault(s[:cut], len(folder_of))
            tails.append(s[cut:].encode("utf-8", "surrogatepass"))
        offsets = np.zeros(len(strings) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in tails], out=offsets[1:])
        data = np.frombuffer(b"".join(tails), dtype=np.uint8) if tails else np.zeros(0, np.uint8)
        return cls(list(folder_of), folder_index, data, offsets)

    def __len__(self) -> int:
        return len(self.folder_index)

    def get(self, i: int) -> str:
        tail = self.data[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8", "surrogatepass")
        return self.folders[self.folder_index[i]] + tail

    def to_list(self) -> List[str]:
        return [self.get(i) for i in range(len(self))]

    def take(self, indices: np.ndarray) -> "StringTable":
        """The strings at `indices` (int array), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, ends = self.offsets[indices], self.offsets[indices + 1]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        data = (np.concatenate([self.data[s:e] for s, e in zip(starts, ends)]) if len(indices)
                else np.zeros(0, np.uint8))
        return StringTable(self.folders, self.folder_index[indices], data, offsets)


def _ranges(offsets: np.ndarray, indices: np.ndarray) -> tuple:
    """(flat element indices of the slices offsets[i]:offsets[i+1] for i in indices, new offsets)."""
    starts, ends = offsets[indices], offsets[indices + 1]
    counts = ends - starts
    new_offsets = np.zeros(len(indices) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    flat = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1], dtype=np.int64)
    return flat, new_offsets


class AnnotationIndex:
    """The annotations of N images in flat arrays (see the module docstring).

    Attributes:
        image_ids: int64 (N,); sizes: int64 (N, 2) as (h, w).
        box_offsets: int64 (N + 1,); boxes: float32 (B, 4) x1, y1, x2, y2; labels: int64 (B,).
        ignore_offsets: int64 (N + 1,); ignore_boxes: float32 (G, 4); ignore_labels: int64 (G,).
        paths, file_names: :class:`StringTable` of N strings each.
    """

    def __init__(self, *, image_ids: np.ndarray, sizes: np.ndarray, box_offsets: np.ndarray, boxes: np.ndarray,
                 labels: np.ndarray, ignore_offsets: np.ndarray, ignore_boxes: np.ndarray,
                 ignore_labels: np.ndarray, paths: StringTable, file_names: StringTable) -> None:
        self.image_ids = np.ascontiguousarray(image_ids, dtype=np.int64).reshape(-1)
        self.sizes = np.ascontiguousarray(sizes, dtype=np.int64).reshape(-1, 2)
        self.box_offsets = np.ascontiguousarray(box_offsets, dtype=np.int64)
        self.boxes = np.ascontiguousarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
        self.ignore_offsets = np.ascontiguousarray(ignore_offsets, dtype=np.int64)
        self.ignore_boxes = np.ascontiguousarray(ignore_boxes, dtype=np.float32).reshape(-1, 4)
        self.ignore_labels = np.ascontiguousarray(ignore_labels, dtype=np.int64).reshape(-1)
        self.paths, self.file_names = paths, file_names
        n = len(self.image_ids)
        if not (len(self.sizes) == len(paths) == len(file_names) == n
                and len(self.box_offsets) == len(self.ignore_offsets) == n + 1
                and self.box_offsets[-1] == len(self.boxes) == len(self.labels)
                and self.ignore_offsets[-1] == len(self.ignore_boxes) == len(self.ignore_labels)):
            raise ValueError("inconsistent AnnotationIndex arrays")

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord]) -> "AnnotationIndex":
        """An index of :class:`ImageRecord` objects, in order."""
        def flat(arrays, width):
            arrays = [np.asarray(a).reshape(-1, width) if width else np.asarray(a).reshape(-1) for a in arrays]
            if arrays:
                return np.concatenate(arrays)
            return np.zeros((0, width) if width else (0,))

        def offsets(arrays):
            out = np.zeros(len(arrays) + 1, dtype=np.int64)
            np.cumsum([len(a) for a in arrays], out=out[1:])
            return out

        records = list(records)
        return cls(image_ids=np.array([r.image_id for r in records], dtype=np.int64),
                   sizes=np.array([tuple(r.size) for r in records], dtype=np.int64).reshape(-1, 2),
                   box_offsets=offsets([r.boxes for r in records]), boxes=flat([r.boxes for r in records], 4),
                   labels=flat([r.labels for r in records], 0),
                   ignore_offsets=offsets([r.ignore_boxes for r in records]),
                   ignore_boxes=flat([r.ignore_boxes for r in records], 4),
                   ignore_labels=flat([r.ignore_labels for r in records], 0),
                   paths=StringTable.from_strings([r.path for r in records]),
                   file_names=StringTable.from_strings([r.file_name for r in records]))

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    def box_slice(self, i: int) -> slice:
        return slice(int(self.box_offsets[i]), int(self.box_offsets[i + 1]))

    def ignore_slice(self, i: int) -> slice:
        return slice(int(self.ignore_offsets[i]), int(self.ignore_offsets[i + 1]))

    def boxes_per_image(self) -> np.ndarray:
        """int64 (N,) number of boxes of each image."""
        return np.diff(self.box_offsets)

    def box_image_index(self) -> np.ndarray:
        """int64 (B,) the image (position) of every box."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.boxes_per_image())

    def record(self, i: int) -> ImageRecord:
        """The :class:`ImageRecord` of image `i` (arrays are copies)."""
        b, g = self.box_slice(i), self.ignore_slice(i)
        return ImageRecord(image_id=int(self.image_ids[i]), path=self.paths.get(i),
                           file_name=self.file_names.get(i), size=(int(self.sizes[i, 0]), int(self.sizes[i, 1])),
                           boxes=self.boxes[b].copy(), labels=self.labels[b].copy(),
                           ignore_boxes=self.ignore_boxes[g].copy(), ignore_labels=self.ignore_labels[g].copy())

    def take(self, indices: Sequence[int]) -> "AnnotationIndex":
        """The images at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        indices = indices % max(len(self), 1)
        flat_b, box_offsets = _ranges(self.box_offsets, indices)
        flat_g, ignore_offsets = _ranges(self.ignore_offsets, indices)
        return AnnotationIndex(image_ids=self.image_ids[indices], sizes=self.sizes[indices], box_offsets=box_offsets,
                               boxes=self.boxes[flat_b], labels=self.labels[flat_b], ignore_offsets=ignore_offsets,
                               ignore_boxes=self.ignore_boxes[flat_g], ignore_labels=self.ignore_labels[flat_g],
                               paths=self.paths.take(indices), file_names=self.file_names.take(indices))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the interned folder strings aside)."""
        arrays = (self.image_ids, self.sizes, self.box_offsets, self.boxes, self.labels, self.ignore_offsets,
                  self.ignore_boxes, self.ignore_labels)
        tables = (self.paths, self.file_names)
        return int(sum(a.nbytes for a in arrays)
                   + sum(t.data.nbytes + t.offsets.nbytes + t.folder_index.nbytes for t in tables))
