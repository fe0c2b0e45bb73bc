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
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from detkit.data.dataset import DetectionDataset, ImageRecord, probe_image, settle_bad_annotations
from detkit.data.report import DataReport
from detkit.data.sanitize import sanitize_boxes
from detkit.errors import DataError

__all__ = ["COCODataset", "coco_box_to_xyxy", "xyxy_to_coco_box", "load_coco_api"]


def coco_box_to_xyxy(x: float, y: float, w: float, h: float) -> List[float]:
    """COCO [x, y, w, h] -> detkit (x1, y1, x2, y2) = [x, y, x + w, y + h]."""
    return [x, y, x + w, y + h]


def xyxy_to_coco_box(x1: float, y1: float, x2: float, y2: float) -> List[float]:
    """detkit (x1, y1, x2, y2) -> COCO [x, y, w, h] = [x1, y1, x2 - x1, y2 - y1]."""
    return [x1, y1, x2 - x1, y2 - y1]


def _number_list(value, length: int) -> bool:
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
        missing = [k for k in ("id", "image_id", "category_id") if k not in e]
        if missing:
            return f"has no {', '.join(repr(k) for k in missing)}"
        if e["image_id"] not in image_ids:
            return f"refers to image_id {e['image_id']!r}, which is not a (valid) image of the file"
        if not _number_list(e.get("bbox"), 4):
            return f"has bbox {e.get('bbox')!r}, expected [x, y, width, height] numbers"
        return None

    annotations = keep(data["annotations"], "annotation", check_annotation)
    return {**data, "images": images, "annotations": annotations, "categories": categories}, problems


def load_coco_api(ann_file: str, problems: Optional[List[str]] = None):
    """pycocotools.coco.COCO for `ann_file`, quietly.

    Invalid entries (:func:`invalid_coco_entries`) are all collected: appended to ``problems`` and left
    out when a list is given, else raised together in one DataError.

    Raises:
        DataError: the file is missing, not JSON, not COCO-shaped, or (without ``problems``) has invalid entries.
    """
    from pycocotools.coco import COCO

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
    api = COCO()
    api.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.createIndex()
    except (KeyError, TypeError) as exc:
        raise DataError(f"COCO annotation file '{ann_file}' is malformed: missing or wrong field {exc}") from None
    return api


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
    """

    def __init__(self, *, ann_file: str, img_dir: str, classes: Optional[Sequence[str]] = None,
                 skip_bad_images: bool = False, ignore_unknown_classes: bool = False,
                 drop_empty: bool = False, skip_bad_annotations: bool = False, log_report: bool = True) -> None:
        ann_file, img_dir = os.fspath(ann_file), os.fspath(img_dir)
        name = f"coco {os.path.basename(ann_file)}"
        report = DataReport(name)
        self.bad_annotations: List[str] = []
        api = load_coco_api(ann_file, self.bad_annotations)
        total = len(api.dataset["images"]) + len(api.dataset["annotations"]) + len(self.bad_annotations)
        settle_bad_annotations(self.bad_annotations, total, name, skip=skip_bad_annotations, report=report,
                               what="entries (images, annotations, categories)")
        cats = sorted(api.dataset["categories"], key=lambda c: c["id"])
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
        records = []
        for image_id in tqdm(sorted(api.imgs), desc=f"reading {name}", disable=None, leave=False):
            record = self._make_record(api, image_id, img_dir, report, skip_bad_images)
            if record is None:
                continue
            if drop_empty and len(record.boxes) == 0:
                report.add("empty_dropped", example=record.file_name)
                continue
            records.append(record)
        super().__init__(records=records, classes=classes, category_ids=category_ids, report=report, name=name)
        if log_report:
            report.log()

    def _image_size(self, info: dict, path: str, report: DataReport, skip: bool):
        probed = probe_image(path, skip_bad_images=skip, report=report,
                             context=f"image id {info['id']} of '{self.ann_file}'")
        if probed is None:
            return None
        h, w, orientation = probed
        json_size = (info.get("height"), info.get("width"))
        if all(isinstance(v, (int, float)) and v > 0 for v in json_size) and tuple(json_size) != (h, w):
            detail = ("annotated on the unrotated image" if orientation in (5, 6, 7, 8)
                      and tuple(json_size) == (w, h) else "different size")
            report.add("size_mismatch", example=f"{info['file_name']}: JSON {json_size[1]}x{json_size[0]}, "
                                                f"image {w}x{h}", detail=detail)
        return h, w

    def _make_record(self, api, image_id: int, img_dir: str, report: DataReport,
                     skip: bool) -> Optional[ImageRecord]:
        info = api.imgs[image_id]
        path = os.path.normpath(os.path.join(img_dir, info["file_name"]))
        size = self._image_size(info, path, report, skip)
        if size is None:
            return None
        boxes, labels, ignore_boxes, ignore_labels = [], [], [], []
        for ann in api.imgToAnns.get(image_id, []):
            label = self._label_of.get(ann.get("category_id"))
            if label is None:
                if not self._ignore_unknown:
                    known = [self._cat_name.get(c, str(c)) for c in self._label_of]
                    raise DataError(f"COCO annotation file '{self.ann_file}': annotation {ann.get('id')} has "
                                    f"category_id {ann.get('category_id')} "
                                    f"('{self._cat_name.get(ann.get('category_id'), 'no such category')}'), "
                                    f"not one of the classes {known} (set data.ignore_unknown_classes=true "
                                    f"to drop such annotations)")
                report.add("unknown_class_dropped", example=info["file_name"],
                           detail=self._cat_name.get(ann.get("category_id"), str(ann.get("category_id"))))
                continue
            box = coco_box_to_xyxy(*(float(v) for v in ann["bbox"]))  # checked by invalid_coco_entries
            if ann.get("iscrowd", 0):
                report.add("crowd_ignored", example=info["file_name"])
                ignore_boxes.append(box)
                ignore_labels.append(label)
            else:
                boxes.append(box)
                labels.append(label)
        where = info["file_name"]
        boxes, labels = sanitize_boxes(np.array(boxes), np.array(labels), size, report, where)
        ignore_boxes, ignore_labels = sanitize_boxes(np.array(ignore_boxes), np.array(ignore_labels),
                                                     size, report, where + " (crowd)")
        return ImageRecord(image_id=int(image_id), path=path, file_name=str(info["file_name"]), size=size,
                           boxes=boxes, labels=labels, ignore_boxes=ignore_boxes, ignore_labels=ignore_labels)
