"""Seeded COCO-scale and VOC07+12-scale annotation sets for benchmarks/bench_scale.py (no real images).

COCO shape (train2017 at scale 1): 118,287 images, about 7.3 boxes per image (about 860k boxes), 80
classes with a long-tailed frequency (person about a third of the boxes), box sizes log-normal with
about 41% small (< 32^2), 35% medium and 24% large, about 1% crowd regions, about 1% images without
boxes, and a few flawed boxes (reaching outside the image, degenerate, exact duplicates) as in
real files. Segmentation polygons are left out (bbox detection does not read them).

VOC07+12 shape (trainval at scale 1): 5,011 + 11,540 XML files, 20 classes, about 2.9 objects per
image, about 8% of them difficult.

Images: every annotated image is a hard link to one of a small pool of flat JPEG files, one per
distinct image size, so the headers that the loaders read give the annotated sizes and decoding
costs what a small JPEG costs. Nothing here writes outside the folder it is given.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

__all__ = ["COCO_TRAIN_IMAGES", "VOC_IMAGES", "make_coco", "make_voc", "make_detections", "COCO_SIZES"]

COCO_TRAIN_IMAGES = 118_287
VOC_IMAGES = (5_011, 11_540)
# (w, h) of the pool images: COCO's most common sizes (its images have at most 640 px on the long side)
COCO_SIZES = ((640, 480), (640, 427), (480, 640), (640, 426), (640, 424), (500, 375), (640, 360), (427, 640),
              (640, 512), (612, 612), (375, 500), (640, 640))
VOC_SIZES = ((500, 375), (500, 333), (375, 500), (500, 334), (333, 500), (500, 500), (486, 500))
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _pool(folder: str, sizes) -> Dict[Tuple[int, int], str]:
    os.makedirs(folder, exist_ok=True)
    out = {}
    for k, (w, h) in enumerate(sizes):
        path = os.path.join(folder, f"pool_{w}x{h}.jpg")
        if not os.path.exists(path):
            Image.new("RGB", (w, h), (40 + 15 * k, 90, 160)).save(path, quality=60)
        out[(w, h)] = path
    return out


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system
        os.symlink(os.path.abspath(src), dst)


def _boxes(rng: np.random.Generator, n: int, w: int, h: int, median_side: float) -> np.ndarray:
    """n boxes (x, y, bw, bh) inside a w x h image, sqrt(area) log-normal around `median_side`."""
    side = np.exp(rng.normal(np.log(median_side), 1.0, n))
    aspect = np.exp(rng.normal(0.0, 0.6, n))  # h / w
    bw = np.clip(side / np.sqrt(aspect), 1.0, w)
    bh = np.clip(side * np.sqrt(aspect), 1.0, h)
    x = rng.uniform(0, 1, n) * (w - bw)
    y = rng.uniform(0, 1, n) * (h - bh)
    return np.round(np.stack([x, y, bw, bh], axis=1), 2)


def make_coco(folder: str, *, scale: float = 1.0, seed: int = 0, num_images: int = 0,
              image_dir: str = "images", flaws: bool = True) -> Tuple[str, str]:
    """Write ``<folder>/annotations.json`` and the image links; returns (annotation file, image folder).
    ``flaws``: put in the few flawed boxes (clipped, degenerate, duplicated)."""
    rng = np.random.default_rng(seed)
    n = num_images or max(2, int(round(COCO_TRAIN_IMAGES * scale)))
    img_dir = os.path.join(folder, image_dir)
    pool = _pool(os.path.join(folder, "pool"), COCO_SIZES)
    os.makedirs(img_dir, exist_ok=True)
    freq = 1.0 / np.arange(1, 81) ** 1.1
    freq[0] *= 6.0  # person
    freq /= freq.sum()
    size_index = rng.choice(len(COCO_SIZES), n, p=np.r_[0.3, 0.15, 0.1, 0.07, 0.05, 0.05, 0.05, 0.05, 0.04,
                                                        0.04, 0.05, 0.05])
    counts = np.where(rng.random(n) < 0.01, 0, 1 + np.minimum(rng.negative_binomial(1.2, 0.16, n), 90))
    image_ids = np.sort(rng.choice(600_000, n, replace=False)) + 1
    images, annotations = [], []
    for k in range(n):
        w, h = COCO_SIZES[size_index[k]]
        name = f"{image_ids[k]:012d}.jpg"
        images.append({"id": int(image_ids[k]), "file_name": name, "width": w, "height": h})
        _link(pool[(w, h)], os.path.join(img_dir, name))
        m = int(counts[k])
        if not m:
            continue
        boxes = _boxes(rng, m, w, h, 40.0)
        cats = rng.choice(80, m, p=freq)
        crowd = rng.random(m) < 0.01
        flaw = rng.random(m) if flaws else np.ones(m)
        boxes[flaw < 0.002, 2] += 30.0  # reaches outside the image: clipped
        boxes[(flaw >= 0.002) & (flaw < 0.003), 3] = 0.0  # degenerate
        if m > 1 and flaw[0] < 0.01:
            boxes[1], cats[1], crowd[1] = boxes[0], cats[0], crowd[0]  # exact duplicate
        for b, c, cr in zip(boxes.tolist(), cats.tolist(), crowd.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": int(image_ids[k]),
                                "category_id": COCO_CATEGORY_IDS[c], "bbox": b, "area": round(b[2] * b[3], 2),
                                "iscrowd": int(cr), "segmentation": []})
    categories = [{"id": c, "name": f"class{c:02d}", "supercategory": "thing"} for c in COCO_CATEGORY_IDS]
    ann_file = os.path.join(folder, "annotations.json")
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return ann_file, img_dir


def make_voc(folder: str, *, scale: float = 1.0, seed: int = 0) -> List[str]:
    """Write VOC2007 and VOC2012 trees (Annotations, JPEGImages links, ImageSets/Main/trainval.txt); returns
    the roots."""
    rng = np.random.default_rng(seed)
    pool = _pool(os.path.join(folder, "pool"), VOC_SIZES)
    roots = []
    for year, total in zip(("VOC2007", "VOC2012"), VOC_IMAGES):
        root = os.path.join(folder, year)
        for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        ids = []
        for k in range(max(1, int(round(total * scale)))):
            image_id = f"{2007 if year == 'VOC2007' else 2012}_{k:06d}"
            w, h = VOC_SIZES[int(rng.integers(len(VOC_SIZES)))]
            _link(pool[(w, h)], os.path.join(root, "JPEGImages", image_id + ".jpg"))
            m = 1 + int(min(rng.geometric(0.5), 40))
            objects = []
            for x, y, bw, bh in _boxes(rng, m, w, h, 120.0):
                x1, y1 = int(x) + 1, int(y) + 1
                x2, y2 = max(x1 + 1, min(w, int(x + bw))), max(y1 + 1, min(h, int(y + bh)))
                objects.append(f"<object><name>{VOC_CLASSES[int(rng.integers(20))]}</name><pose>Unspecified</pose>"
                               f"<truncated>0</truncated><difficult>{int(rng.random() < 0.08)}</difficult>"
                               f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                               f"</bndbox></object>")
            xml = (f"<annotation><folder>{year}</folder><filename>{image_id}.jpg</filename><size><width>{w}</width>"
                   f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>{''.join(objects)}"
                   f"</annotation>")
            with open(os.path.join(root, "Annotations", image_id + ".xml"), "w", encoding="utf-8") as f:
                f.write(xml)
            ids.append(image_id)
        with open(os.path.join(root, "ImageSets", "Main", "trainval.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + "\n")
        roots.append(root)
    return roots


def make_detections(annotations: List[dict], num_classes: int, *, per_image: int = 100, seed: int = 0) -> List[dict]:
    """`per_image` detections per image: jittered copies of its boxes (70% with the right class) plus random
    boxes, with random scores; float32 arrays as a detector returns them."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in annotations:
        h, w = ann["orig_size"]
        gt, labels = np.asarray(ann["boxes"], np.float32).reshape(-1, 4), np.asarray(ann["labels"]).reshape(-1)
        j = rng.integers(0, max(len(gt), 1), per_image)
        noise = rng.normal(0, 6, (per_image, 4)).astype(np.float32)
        boxes = (gt[j] + noise) if len(gt) else np.zeros((per_image, 4), np.float32)
        rand = rng.random(per_image) < (0.4 if len(gt) else 1.0)
        xy = rng.uniform(0, [w - 2, h - 2], (per_image, 2)).astype(np.float32)
        boxes[rand] = np.concatenate([xy, xy + rng.uniform(2, 150, (per_image, 2))], 1)[rand].astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        det_labels = np.where(rng.random(per_image) < 0.7, labels[j] if len(gt) else 1,
                              rng.integers(1, num_classes + 1, per_image))
        out.append({"boxes": boxes, "scores": rng.random(per_image).astype(np.float32),
                    "labels": det_labels.astype(np.int64)})
    return out
