"""Derive a VOC-layout data set unlike its source: 2x2 mosaics of its images, a subset of its classes.

A recipe tuned on one data set has to be checked on data whose object sizes and class count differ.
With no other data set on the machine, this script makes one from a VOC set: every output image is a
2x2 mosaic of four source images of the same split (so the objects are half as large relative to the
image, and four times as many per image), and only the classes named by ``--classes`` are annotated
(the others stay in the pixels, unannotated, as background). Nothing is written outside ``--out``.

    python -m scripts.mosaic_voc --root ../shared/data/BCCD --out runs/data/bccd_mosaic \
        --classes Platelets WBC --splits train val test --uses 2

Each source image appears ``--uses`` times per split, beside other images each time (seeded
shuffles), so a split of N images gives N * uses / 4 mosaics (rounded down). Tiles are resized to the
split's most common image size, so every mosaic is twice that size. Objects marked difficult keep their
flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

Box = Tuple[str, int, float, float, float, float]  # (name, difficult, x1, y1, x2, y2)


def read_split(root: str, split: str) -> List[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` (or ``<split>.txt`` at the root)."""
    for path in (os.path.join(root, "ImageSets", "Main", f"{split}.txt"), os.path.join(root, f"{split}.txt")):
        if os.path.isfile(path):
            with open(path) as f:
                return [line.split()[0] for line in f if line.strip()]
    raise FileNotFoundError(f"no split file for {split!r} under {root} "
                            f"(looked for ImageSets/Main/{split}.txt and {split}.txt)")


def read_objects(xml_path: str, classes: Sequence[str]) -> List[Box]:
    """The objects of one VOC XML file whose class is in `classes`, with positive-area boxes."""
    objects = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if name not in classes or box is None:
            continue
        x1, y1, x2, y2 = (float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (x2 > x1 and y2 > y1):  # also false for NaN: unreadable boxes are left out
            continue
        objects.append((name, int((obj.findtext("difficult") or "0").strip() == "1"), x1, y1, x2, y2))
    return objects


def mosaic_groups(num_images: int, uses: int, seed: int) -> List[List[int]]:
    """Groups of four image indices, [top-left, top-right, bottom-left, bottom-right].

    `uses` seeded permutations of range(num_images) are laid end to end and cut into fours, so each
    index is in `uses` groups (those of a last incomplete four are dropped) beside other images each
    time; only a four that straddles two permutations can hold one image twice. Returns
    num_images * uses // 4 groups.
    """
    rng = np.random.default_rng(seed)
    flat = np.concatenate([rng.permutation(num_images) for _ in range(uses)])
    return [[int(i) for i in flat[4 * g: 4 * g + 4]] for g in range(len(flat) // 4)]


def write_xml(path: str, filename: str, width: int, height: int, objects: List[Box]) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for name, difficult, x1, y1, x2, y2 in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(difficult)
        box = ET.SubElement(obj, "bndbox")
        for key, value in (("xmin", x1), ("ymin", y1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, key).text = f"{value:.1f}"
    ET.ElementTree(root).write(path)


def make_split(root: str, out: str, split: str, classes: Sequence[str], uses: int, seed: int) -> Dict[str, int]:
    ids = read_split(root, split)
    if len(ids) * uses < 4:
        raise ValueError(f"split {split!r} of {root} has {len(ids)} images: too few for one 2x2 mosaic "
                         f"at --uses {uses}")
    sizes = {i: Image.open(os.path.join(root, "JPEGImages", f"{i}.jpg")).size for i in ids}
    tile_w, tile_h = Counter(sizes.values()).most_common(1)[0][0]
    names = []
    counts: Counter = Counter()
    for g, group in enumerate(mosaic_groups(len(ids), uses, seed)):
        canvas = Image.new("RGB", (2 * tile_w, 2 * tile_h))
        objects: List[Box] = []
        for q, index in enumerate(group):
            image_id = ids[index]
            ox, oy = (q % 2) * tile_w, (q // 2) * tile_h
            sx, sy = tile_w / sizes[image_id][0], tile_h / sizes[image_id][1]
            with Image.open(os.path.join(root, "JPEGImages", f"{image_id}.jpg")) as tile:
                canvas.paste(tile.convert("RGB").resize((tile_w, tile_h)), (ox, oy))
            for name, difficult, x1, y1, x2, y2 in read_objects(os.path.join(root, "Annotations", f"{image_id}.xml"),
                                                                classes):
                # clip to the tile (VOC pixels are 1-based: 1..W), so that a box reaching outside its
                # source image does not enter a neighbour
                box = (max(x1 * sx, 1.0) + ox, max(y1 * sy, 1.0) + oy,
                       min(x2 * sx, tile_w) + ox, min(y2 * sy, tile_h) + oy)
                if box[2] > box[0] and box[3] > box[1]:
                    objects.append((name, difficult, *box))
                    counts[name] += 1
        name = f"{split}_mosaic_{g:05d}"
        canvas.save(os.path.join(out, "JPEGImages", f"{name}.jpg"), quality=92)
        write_xml(os.path.join(out, "Annotations", f"{name}.xml"), f"{name}.jpg", 2 * tile_w, 2 * tile_h, objects)
        names.append(name)
    with open(os.path.join(out, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in names))
    return {"images": len(names), **counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="a VOC-layout folder (JPEGImages, Annotations, ImageSets)")
    parser.add_argument("--out", required=True, help="the new data set's folder (created)")
    parser.add_argument("--classes", nargs="+", required=True, help="the classes to keep annotated")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--uses", type=int, default=2, help="how many mosaics each source image is in")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.uses < 1:
        parser.error(f"--uses must be >= 1, got {args.uses}")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    for k, split in enumerate(args.splits):
        stats = make_split(args.root, args.out, split, args.classes, args.uses, args.seed + k)
        print(f"{split}: " + ", ".join(f"{key} {value}" for key, value in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
