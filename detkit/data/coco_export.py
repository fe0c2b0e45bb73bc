"""Any detkit data set -> COCO JSON (used by `detkit convert`; also a ready COCO ground truth).

Boxes are written with :func:`~detkit.data.coco.xyxy_to_coco_box` (the data set's continuous
coordinates, so a VOC box [xmin, ymin, xmax, ymax] becomes [xmin - 1, ymin - 1, xmax - xmin + 1,
ymax - ymin + 1]); ignore regions (VOC difficult, COCO crowd) become ``iscrowd: 1`` annotations,
which COCODataset reads back as ignore regions and COCOeval excludes. Image ids, file names,
sizes and categories (``category_ids`` / ``classes``) are the data set's, so reading the file
back with COCODataset gives exactly the same boxes, labels and ids.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from detkit.atomic_io import write_json_atomic
from detkit.data.coco import xyxy_to_coco_box

__all__ = ["dataset_to_coco", "write_coco_file"]


def dataset_to_coco(dataset, *, img_root: Optional[str] = None, description: Optional[str] = None) -> dict:
    """The COCO dict (images, annotations, categories) of a data set, from get_annotation (no decoding).

    Args:
        img_root: write each file_name relative to this folder (needed when the data set joins
            several roots); default: the data set's own file names (relative to its image folder).
    """
    images, annotations = [], []
    for i in range(len(dataset)):
        ann = dataset.get_annotation(i)
        h, w = ann["orig_size"]
        file_name = ann["file_name"] if img_root is None else os.path.relpath(dataset.image_path(i), img_root)
        images.append({"id": int(ann["image_id"]), "file_name": file_name, "width": int(w), "height": int(h)})
        groups = ((ann["boxes"], ann["labels"], 0), (ann["ignore_boxes"], ann["ignore_labels"], 1))
        for boxes, labels, crowd in groups:
            for box, label in zip(boxes.tolist(), labels.tolist()):
                x, y, bw, bh = xyxy_to_coco_box(*box)
                annotations.append({"id": len(annotations) + 1, "image_id": int(ann["image_id"]),
                                    "category_id": int(dataset.category_ids[label - 1]),
                                    "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": crowd})
    categories = [{"id": int(cid), "name": name, "supercategory": "none"}
                  for cid, name in zip(dataset.category_ids, dataset.classes)]
    info = {"description": description or f"converted by detkit from {getattr(dataset, 'name', 'a data set')}"}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def write_coco_file(dataset, path: str, *, img_root: Optional[str] = None,
                    log: Callable[[str], None] = print) -> dict:
    """Write :func:`dataset_to_coco` of ``dataset`` to ``path`` (atomically), as ``detkit convert`` does.

    Logs the data set's report (every box it dropped or clipped) and a one-line summary; returns the COCO dict.
    """
    coco = dataset_to_coco(dataset, img_root=img_root)
    write_json_atomic(coco, path)
    log(dataset.report.summary())
    num_boxes = sum(1 for a in coco["annotations"] if not a["iscrowd"])  # ignore regions are not boxes
    log(f"wrote {path}: {len(dataset)} images, {num_boxes} boxes, classes {dataset.classes}")
    return coco
