"""Helpers of the data tests: the BCCD path, a tiny synthetic config, VOC / COCO / image writers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from detkit.config import Config, config_from_dict

BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "BCCD"


def tiny_synthetic_config(cache_dir, **synthetic) -> Config:
    params = {"cache_dir": str(cache_dir), "num_train": 6, "num_val": 4, "image_size": 64,
              "max_objects": 3, "empty_fraction": 0.25, "seed": 0}
    params.update(synthetic)
    return config_from_dict({"data": {"format": "synthetic", "synthetic": params, "min_size": [64],
                                      "max_size": 64},
                             "train": {"batch_size": 2}})


def write_image(path: Path, size=(40, 60), seed: int = 0) -> Path:
    """A random RGB JPEG/PNG (by extension) of size (h, w)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)
    return path


def voc_xml(filename: Optional[str], size: Optional[Sequence[int]], objects: Iterable[tuple]) -> str:
    """VOC XML text; size is (w, h); objects are (name, xmin, ymin, xmax, ymax[, difficult])."""
    parts = ["<annotation>", "<folder>JPEGImages</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for obj in objects:
        name, x1, y1, x2, y2 = obj[:5]
        difficult = obj[5] if len(obj) > 5 else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def write_voc(root: Path, items: dict, split: Optional[str] = "train", image_ext: str = ".jpg",
              image_size=(40, 60)) -> Path:
    """Write an official-layout VOC root. items: id -> list of objects (see voc_xml)."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for k, (image_id, objects) in enumerate(items.items()):
        write_image(root / "JPEGImages" / f"{image_id}{image_ext}", image_size, seed=k)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            voc_xml(f"{image_id}{image_ext}", (image_size[1], image_size[0]), objects))
    if split is not None:
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(items) + "\n")
    return root


def write_coco(path: Path, images: list, annotations: list, categories: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
