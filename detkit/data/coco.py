"""COCO data sets (JSON read through pycocotools).

Box convention (applied in :func:`coco_box_to_xyxy` and nowhere else): COCO stores
``[x, y, width, height]`` in continuous pixel coordinates, so ``x1, y1, x2, y2 = x, y, x + w, y + h``.
:func:`xyxy_to_coco_box` is the exact inverse.

Categories: COCO category ids (any integers, e.g. 1..90 with gaps) map to contiguous labels
1..K in increasing id order (or in the order of ``classes`` when given, matched by name);
``category_ids[label - 1]`` maps back for writing results. ``iscrowd`` annotations become
ignore regions; images without annotations are kept as negatives unless ``drop_empty``.
Image sizes come from the image headers (read without decoding); a JSON width/height that
disagrees is reported and the real size is used.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from collections.abc import Hashable
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from detkit.data.coco_tables import DEFAULT_CACHE_DIR, HeaderCache, read_coco_tables
from detkit.data.dataset import DetectionDataset, probe_image, settle_bad_annotations
from detkit.data.index import AnnotationIndex, StringTable
from detkit.data.report import DataReport
from detkit.data.sanitize import sanitize_groups
from detkit.errors import DataError

__all__ = ["COCODataset", "coco_box_to_xyxy", "xyxy_to_coco_box", "load_coco_api", "load_coco_data"]


def coco_box_to_xyxy(x: float, y: float, w: float, h: float) -> List[float]:
    """COCO [x, y, w, h] -> detkit (x1, y1, x2, y2) = [x, y, x + w, y + h]."""
    return [x, y, x + w, y + h]


def xyxy_to_coco_box(x1: float, y1: float, x2: float, y2: float) -> List[float]:
    """detkit (x1, y1, x2, y2) -> COCO [x, y, w, h] = [x1, y1, x2 - x1, y2 - y1]."""
    return [x1, y1, x2 - x1, y2 - y1]


_NUMBER_TYPES = frozenset((int, float))


def _number_list(value, length: int) -> bool:
    if type(value) is list and len(value) == length and set(map(type, value)) <= _NUMBER_TYPES:
        return True  # what JSON gives: decided without the general check (bool is its own type)
    return (isinstance(value, (list, tuple)) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def invalid_coco_entries(data: dict, ann_file: str) -> Tuple[dict, List[str]]:
    """(data without its invalid entries, one message per invalid entry), in one pass over the file.

    Invalid: an image without an integer ``id`` or a ``file_name``; an annotation that is not an
    object, lacks ``id``, ``image_id`` or ``category_id``, points at no image, or whose ``bbox`` is not
    four numbers; a category without ``id`` or ``name``. Annotations of a dropped image go with it.
    """
    problems: List[str] = []
    where = os.path.basename(ann_file)

    def keep(entries, kind, check):
        out = []
        for k, entry in enumerate(entries):
            reason = check(entry) if isinstance(entry, dict) else "is not a JSON object"
            if reason:
                ident = entry.get("id", f"#{k}") if isinstance(entry, dict) else f"#{k}"
                problems.append(f"{where}: {kind} {ident} {reason}")
            else:
                out.append(entry)
        return out

    images = keep(data["images"], "image",
                  lambda e: ("has no integer 'id'" if not isinstance(e.get("id"), int) or isinstance(e.get("id"), bool)
                             else "has no 'file_name'" if not isinstance(e.get("file_name"), str) else None))
    image_ids = {e["id"] for e in images}
    categories = keep(data["categories"], "category",
                      lambda e: "needs an 'id' and a 'name'" if "id" not in e or "name" not in e else None)

    def check_annotation(e):
        if "id" not in e or "image_id" not in e or "category_id" not in e:
            missing = [k for k in ("id", "image_id", "category_id") if k not in e]
            return f"has no {', '.join(repr(k) for k in missing)}"
        if e["image_id"] not in image_ids:
            return f"refers to image_id {e['image_id']!r}, which is not a (valid) image of the file"
        if not _number_list(e.get("bbox"), 4):
            return f"has bbox {e.get('bbox')!r}, expected [x, y, width, height] numbers"
        return None

    annotations = keep(data["annotations"], "annotation", check_annotation)
    return {**data, "images": images, "annotations": annotations, "categories": categories}, problems


def load_coco_data(ann_file: str, problems: Optional[List[str]] = None) -> dict:
    """The JSON of `ann_file` without its invalid entries (:func:`invalid_coco_entries`): those are all
    collected, appended to ``problems`` when a list is given, else raised together in one DataError.

    Raises:
        DataError: the file is missing, not JSON, not COCO-shaped, or (without ``problems``) has invalid entries.
    """
    if not os.path.isfile(ann_file):
        raise DataError(f"COCO annotation file '{ann_file}' does not exist")
    try:
        with open(ann_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"COCO annotation file '{ann_file}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"COCO annotation file '{ann_file}' has no 'images' list; "
                        f"expected keys 'images', 'annotations', 'categories'")
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    if not isinstance(data["annotations"], list) or not isinstance(data["categories"], list):
        raise DataError(f"COCO annotation file '{ann_file}': 'annotations' and 'categories' must be lists")
    data, found = invalid_coco_entries(data, ann_file)
    if found and problems is None:
        raise DataError(f"COCO annotation file '{ann_file}' has {len(found)} invalid entries:\n  " + "\n  ".join(found))
    if problems is not None:
        problems.extend(found)
    return data


def load_coco_api(ann_file: str, problems: Optional[List[str]] = None):
    """pycocotools.coco.COCO for `ann_file` (see :func:`load_coco_data`), quietly.

    Raises:
        DataError: as load_coco_data, or the file is malformed in a way pycocotools' index cannot take.
    """
    from pycocotools.coco import COCO

    data = load_coco_data(ann_file, problems)
    api = COCO()
    api.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.createIndex()
    except (KeyError, TypeError) as exc:
        raise DataError(f"COCO annotation file '{ann_file}' is malformed: missing or wrong field {exc}") from None
    return api


def _load_with_problems(ann_file: str) -> Tuple[dict, List[str]]:
    problems: List[str] = []
    return load_coco_data(ann_file, problems), problems


class COCODataset(DetectionDataset):
    """COCO-format data set.

    Args:
        ann_file: the COCO JSON file.
        img_dir: folder that the images' ``file_name`` entries are relative to.
        classes: class names to use, in label order, matched to category names; None = every
            category of the file in increasing id order.
        skip_bad_images: skip (and count) missing / truncated / unreadable images instead of raising.
        skip_bad_annotations: leave out (and count) invalid image, annotation and category entries
            instead of raising; either way they are all found in one pass (``bad_annotations``).
        ignore_unknown_classes: drop (and count) annotations of categories outside `classes`
            (or without a category entry) instead of raising.
        drop_empty: drop images without any (non-crowd) box.
        log_report: log the report summary once after reading.
        index_cache: keep the parsed file and the image headers in a cache file beside `ann_file`
            (or in `cache_dir` when that folder is read-only; see :mod:`detkit.data.coco_tables`).
        cache_dir: the fallback cache folder (None: only beside the file).
    """

    def __init__(self, *, ann_file: str, img_dir: str, classes: Optional[Sequence[str]] = None,
                 skip_bad_images: bool = False, ignore_unknown_classes: bool = False,
                 drop_empty: bool = False, skip_bad_annotations: bool = False, log_report: bool = True,
                 index_cache: bool = False, cache_dir: Optional[str] = DEFAULT_CACHE_DIR) -> None:
        ann_file, img_dir = os.fspath(ann_file), os.fspath(img_dir)
        name = f"coco {os.path.basename(ann_file)}"
        report = DataReport(name)
        if not os.path.isfile(ann_file):
            raise DataError(f"COCO annotation file '{ann_file}' does not exist")
        headers = HeaderCache(ann_file, cache_dir, enabled=index_cache)
        tables = read_coco_tables(ann_file, _load_with_problems, headers.state)
        self.bad_annotations: List[str] = list(tables.problems)
        settle_bad_annotations(self.bad_annotations, tables.num_entries, name, skip=skip_bad_annotations,
                               report=report, what="entries (images, annotations, categories)")
        cats = sorted(tables.categories, key=lambda c: c["id"])
        if classes is None:
            classes = [str(c["name"]) for c in cats]
            category_ids = [int(c["id"]) for c in cats]
        else:
            by_name = {str(c["name"]): int(c["id"]) for c in cats}
            missing = [c for c in classes if c not in by_name]
            if missing:
                raise DataError(f"COCO annotation file '{ann_file}' has no category named {missing}; "
                                f"its categories are {sorted(by_name)}")
            category_ids = [by_name[c] for c in classes]
        self._label_of: Dict[int, int] = {cid: i + 1 for i, cid in enumerate(category_ids)}
        self._cat_name = {int(c["id"]): str(c["name"]) for c in cats}
        self._ignore_unknown = ignore_unknown_classes
        self.ann_file = ann_file
        index = self._build_index(tables, img_dir, headers, report, skip_bad_images, drop_empty)
        headers.save()
        super().__init__(index=index, classes=classes, category_ids=category_ids, report=report, name=name)
        if log_report:
            report.log()

    def _unknown_class_error(self, tables, a: int) -> DataError:
        value = tables.category_values[tables.ann_category[a]]
        known = [self._cat_name.get(c, str(c)) for c in self._label_of]
        return DataError(f"COCO annotation file '{self.ann_file}': annotation {int(tables.ann_ids[a])} has "
                         f"category_id {value} ('{self._cat_name.get(value, 'no such category')}'), "
                         f"not one of the classes {known} (set data.ignore_unknown_classes=true "
                         f"to drop such annotations)")

    def _image_sizes(self, tables, paths, headers, report, skip, unknown_at) -> np.ndarray:
        """(h, w) of every image, (-1, -1) for a skipped one; image by image as the report wants them."""
        sizes = np.full((len(paths), 2), -1, dtype=np.int64)
        for k, header in enumerate(tqdm(headers.read(paths), desc=f"reading {self.ann_file}", disable=None,
                                        leave=False)):
            probed = probe_image(paths[k], skip_bad_images=skip, report=report, header=header,
                                 context=f"image id {int(tables.image_ids[k])} of '{self.ann_file}'")
            if probed is None:
                continue
            h, w, orientation = probed
            sizes[k] = h, w
            jh, jw = tables.json_sizes[k]
            if not np.isnan(jh) and (jh, jw) != (h, w):
                shown = [int(v) if is_int else float(v) for v, is_int in zip((jh, jw), tables.json_size_is_int[k])]
                detail = ("annotated on the unrotated image" if orientation in (5, 6, 7, 8)
                          and (jh, jw) == (w, h) else "different size")
                report.add("size_mismatch", example=f"{tables.file_names[k]}: JSON {shown[1]}x{shown[0]}, "
                                                    f"image {w}x{h}", detail=detail)
            if k in unknown_at and not self._ignore_unknown:
                raise self._unknown_class_error(tables, unknown_at[k])
        return sizes

    def _build_index(self, tables, img_dir: str, headers, report: DataReport, skip: bool,
                     drop_empty: bool) -> AnnotationIndex:
        paths = [os.path.normpath(os.path.join(img_dir, f)) for f in tables.file_names]
        label_of_value = np.array([self._label_of.get(v, 0) if isinstance(v, Hashable) else 0
                                   for v in tables.category_values] + [0], dtype=np.int64)
        ann_label = label_of_value[tables.ann_category] if len(tables.ann_category) else np.zeros(0, np.int64)
        unknown = np.flatnonzero(ann_label == 0)
        unknown_at: Dict[int, int] = {}
        for a in unknown[::-1]:  # the first unknown annotation of each image
            unknown_at[int(tables.ann_image[a])] = int(a)
        sizes = self._image_sizes(tables, paths, headers, report, skip, unknown_at)
        usable = sizes[tables.ann_image, 0] >= 0 if len(tables.ann_image) else np.zeros(0, bool)
        for a in unknown[usable[unknown]][:report.max_examples]:
            value = tables.category_values[tables.ann_category[a]]
            report.add("unknown_class_dropped", example=tables.file_names[tables.ann_image[a]],
                       detail=self._cat_name.get(value, str(value)))
        dropped = unknown[usable[unknown]][report.max_examples:]
        report.add_counted("unknown_class_dropped", len(dropped), details=Counter(
            self._cat_name.get(v, str(v)) for v in (tables.category_values[c] for c in tables.ann_category[dropped])))
        use = usable & (ann_label > 0)
        crowd = np.flatnonzero(use & tables.ann_crowd)
        report.add_counted("crowd_ignored", len(crowd),
                           examples=[tables.file_names[tables.ann_image[a]] for a in crowd[:report.max_examples]])
        chosen = np.flatnonzero(use)
        group = 2 * tables.ann_image[chosen] + tables.ann_crowd[chosen]
        names = tables.file_names
        kept, boxes = sanitize_groups(tables.ann_boxes[chosen], ann_label[chosen], group, np.repeat(sizes, 2, axis=0),
                                      lambda g: names[g // 2] + (" (crowd)" if g % 2 else ""), report)
        is_crowd, image_of = tables.ann_crowd[chosen][kept], tables.ann_image[chosen][kept]
        images = np.flatnonzero(sizes[:, 0] >= 0)
        if drop_empty:
            counts = np.bincount(image_of[~is_crowd], minlength=len(paths))
            empty = images[counts[images] == 0]
            report.add_counted("empty_dropped", len(empty),
                               examples=[names[k] for k in empty[:report.max_examples]])
            images = images[counts[images] > 0]
        position = np.full(len(paths), -1, dtype=np.int64)
        position[images] = np.arange(len(images))
        labels = ann_label[chosen][kept]

        def part(mask):
            own = mask & (position[image_of] >= 0)
            offsets = np.zeros(len(images) + 1, dtype=np.int64)
            np.cumsum(np.bincount(position[image_of[own]], minlength=len(images)), out=offsets[1:])
            return offsets, boxes[own], labels[own]

        box_offsets, plain_boxes, plain_labels = part(~is_crowd)
        ignore_offsets, ignore_boxes, ignore_labels = part(is_crowd)
        return AnnotationIndex(image_ids=tables.image_ids[images], sizes=sizes[images], box_offsets=box_offsets,
                               boxes=plain_boxes, labels=plain_labels, ignore_offsets=ignore_offsets,
                               ignore_boxes=ignore_boxes, ignore_labels=ignore_labels,
                               paths=StringTable.from_strings([paths[k] for k in images]),
                               file_names=StringTable.from_strings([names[k] for k in images]))
