"""The per-image COCO reader detkit had before the compact index (pycocotools' index, one record and one
per-image sanitation call, tests/data/sanitize_reference.py): the oracle that tests/data/test_scale_index.py
holds COCODataset to."""

from __future__ import annotations

import os

import numpy as np

from detkit.data.coco import coco_box_to_xyxy, load_coco_api
from detkit.data.dataset import probe_image, settle_bad_annotations
from detkit.data.index import ImageRecord
from detkit.data.report import DataReport
from detkit.errors import DataError
from tests.data.sanitize_reference import reference_sanitize_boxes


def reference_coco(ann_file, img_dir, *, classes=None, skip_bad_images=False, ignore_unknown_classes=False,
                   drop_empty=False, skip_bad_annotations=False):
    """(records, classes, category_ids, report, bad_annotations) as the old COCODataset read them."""
    name = f"coco {os.path.basename(ann_file)}"
    report = DataReport(name)
    bad = []
    api = load_coco_api(ann_file, bad)
    total = len(api.dataset["images"]) + len(api.dataset["annotations"]) + len(bad)
    settle_bad_annotations(bad, total, name, skip=skip_bad_annotations, report=report,
                           what="entries (images, annotations, categories)")
    cats = sorted(api.dataset["categories"], key=lambda c: c["id"])
    if classes is None:
        classes, category_ids = [str(c["name"]) for c in cats], [int(c["id"]) for c in cats]
    else:
        by_name = {str(c["name"]): int(c["id"]) for c in cats}
        category_ids = [by_name[c] for c in classes]
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    cat_name = {int(c["id"]): str(c["name"]) for c in cats}
    records = []
    for image_id in sorted(api.imgs):
        info = api.imgs[image_id]
        path = os.path.normpath(os.path.join(img_dir, info["file_name"]))
        probed = probe_image(path, skip_bad_images=skip_bad_images, report=report,
                             context=f"image id {info['id']} of '{ann_file}'")
        if probed is None:
            continue
        h, w, orientation = probed
        json_size = (info.get("height"), info.get("width"))
        if all(isinstance(v, (int, float)) and v > 0 for v in json_size) and tuple(json_size) != (h, w):
            detail = ("annotated on the unrotated image" if orientation in (5, 6, 7, 8)
                      and tuple(json_size) == (w, h) else "different size")
            report.add("size_mismatch", example=f"{info['file_name']}: JSON {json_size[1]}x{json_size[0]}, "
                                                f"image {w}x{h}", detail=detail)
        boxes, labels, ignore_boxes, ignore_labels = [], [], [], []
        for ann in api.imgToAnns.get(image_id, []):
            label = label_of.get(ann.get("category_id"))
            if label is None:
                if not ignore_unknown_classes:
                    raise DataError(f"unknown class in annotation {ann.get('id')}")
                report.add("unknown_class_dropped", example=info["file_name"],
                           detail=cat_name.get(ann.get("category_id"), str(ann.get("category_id"))))
                continue
            box = coco_box_to_xyxy(*(float(v) for v in ann["bbox"]))
            if ann.get("iscrowd", 0):
                report.add("crowd_ignored", example=info["file_name"])
                ignore_boxes.append(box)
                ignore_labels.append(label)
            else:
                boxes.append(box)
                labels.append(label)
        where = info["file_name"]
        boxes, labels = reference_sanitize_boxes(np.array(boxes), np.array(labels), (h, w), report, where)
        ignore_boxes, ignore_labels = reference_sanitize_boxes(np.array(ignore_boxes), np.array(ignore_labels),
                                                               (h, w), report, where + " (crowd)")
        if drop_empty and len(boxes) == 0:
            report.add("empty_dropped", example=info["file_name"])
            continue
        records.append(ImageRecord(image_id=int(image_id), path=path, file_name=str(info["file_name"]), size=(h, w),
                                   boxes=boxes, labels=labels, ignore_boxes=ignore_boxes, ignore_labels=ignore_labels))
    return records, classes, category_ids, report, bad
