"""Derive a VOC-layout data set of large objects: one crop around each object of a class.

The companion of ``mosaic_voc.py`` (which makes objects smaller): here every output image is a window
around one object of the ``--around`` class, ``--context`` times its width and height, so that object
fills about 1/context^2 of the image, as in data sets of close-ups. Objects of ``--classes`` that the
window holds are annotated, clipped to it; those with less than ``--min-visible`` of their area inside
are marked difficult (detkit ignores them) rather than dropped, because their visible part is still in
the pixels. Nothing is written outside ``--out``.

    python -m scripts.object_crops_voc --root ../shared/data/BCCD --out runs/data/bccd_wbc_crops \\
        --around WBC --classes WBC --splits train test --max-images 100 0

``--max-images`` caps each split (one number per split, 0 for no cap): a seeded choice among its crops.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from scripts.mosaic_voc import Box, read_objects, read_split, write_xml

Window = Tuple[int, int, int, int]  # (left, top, right, bottom) in pixels, right/bottom exclusive


def crop_window(box: Tuple[float, float, float, float], context: float, width: int, height: int) -> Window:
    """A window `context` times the box's size around its centre, shifted (not shrunk) to stay inside
    the image where it fits, and clipped to the image where it does not."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w = min(max((x2 - x1) * context, 1.0), width)
    h = min(max((y2 - y1) * context, 1.0), height)
    left = int(round(min(max(cx - w / 2, 0.0), width - w)))
    top = int(round(min(max(cy - h / 2, 0.0), height - h)))
    return left, top, min(left + int(round(w)), width), min(top + int(round(h)), height)


def objects_in_window(objects: Sequence[Box], window: Window, min_visible: float) -> List[Box]:
    """The objects that overlap `window`, in its coordinates (VOC's 1-based pixels), clipped to it;
    those with less than `min_visible` of their area inside are flagged difficult."""
    left, top, right, bottom = window
    kept = []
    for name, difficult, x1, y1, x2, y2 in objects:
        cx1, cy1, cx2, cy2 = max(x1, left + 1.0), max(y1, top + 1.0), min(x2, float(right)), min(y2, float(bottom))
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        visible = (cx2 - cx1) * (cy2 - cy1) / ((x2 - x1) * (y2 - y1))
        kept.append((name, int(difficult or visible < min_visible), cx1 - left, cy1 - top, cx2 - left, cy2 - top))
    return kept


def make_split(root: str, out: str, split: str, around: str, classes: Sequence[str], context: float,
               min_visible: float, max_images: int, seed: int) -> Dict[str, int]:
    crops = []  # (image id, window)
    for image_id in read_split(root, split):
        objects = read_objects(os.path.join(root, "Annotations", f"{image_id}.xml"), [around])
        if not objects:
            continue
        with Image.open(os.path.join(root, "JPEGImages", f"{image_id}.jpg")) as image:
            width, height = image.size
        for _, difficult, *box in objects:
            if not difficult:
                crops.append((image_id, crop_window(tuple(box), context, width, height)))
    if not crops:
        raise ValueError(f"split {split!r} of {root} has no object of class {around!r} to crop around")
    if 0 < max_images < len(crops):
        chosen = np.random.default_rng(seed).choice(len(crops), size=max_images, replace=False)
        crops = [crops[i] for i in sorted(chosen)]
    names, counts, difficult_count = [], {}, 0
    for k, (image_id, window) in enumerate(crops):
        objects = objects_in_window(read_objects(os.path.join(root, "Annotations", f"{image_id}.xml"), classes),
                                    window, min_visible)
        name = f"{split}_{image_id}_crop{k:05d}"
        with Image.open(os.path.join(root, "JPEGImages", f"{image_id}.jpg")) as image:
            image.convert("RGB").crop(window).save(os.path.join(out, "JPEGImages", f"{name}.jpg"), quality=92)
        write_xml(os.path.join(out, "Annotations", f"{name}.xml"), f"{name}.jpg",
                  window[2] - window[0], window[3] - window[1], objects)
        names.append(name)
        for obj in objects:
            counts[obj[0]] = counts.get(obj[0], 0) + 1
            difficult_count += obj[1]
    with open(os.path.join(out, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in names))
    return {"images": len(names), **counts, "difficult": difficult_count}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="a VOC-layout folder (JPEGImages, Annotations, ImageSets)")
    parser.add_argument("--out", required=True, help="the new data set's folder (created)")
    parser.add_argument("--around", required=True, help="the class whose objects each crop is centred on")
    parser.add_argument("--classes", nargs="+", required=True, help="the classes to keep annotated")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--context", type=float, default=1.6, help="window size over the object's size")
    parser.add_argument("--min-visible", type=float, default=0.5,
                        help="objects with a smaller fraction of their area inside a crop are marked difficult")
    parser.add_argument("--max-images", type=int, nargs="+", default=[0],
                        help="crops per split, one number per split or one for all (0: no cap)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.context < 1.0:
        parser.error(f"--context must be >= 1 (the window holds the object), got {args.context}")
    if not 0.0 <= args.min_visible <= 1.0:
        parser.error(f"--min-visible must be in [0, 1], got {args.min_visible}")
    caps = args.max_images * len(args.splits) if len(args.max_images) == 1 else args.max_images
    if len(caps) != len(args.splits) or min(caps) < 0:
        parser.error(f"--max-images takes one number >= 0, or one per split ({len(args.splits)}), "
                     f"got {args.max_images}")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    for k, (split, cap) in enumerate(zip(args.splits, caps)):
        stats = make_split(args.root, args.out, split, args.around, args.classes, args.context,
                           args.min_visible, cap, args.seed + k)
        print(f"{split}: " + ", ".join(f"{key} {value}" for key, value in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
