"""Run folders for the report tests: a tiny trained run, and hand-made runs whose names are hostile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detkit.config import load_config, save_config

# A class name and a file name that would run script or break attributes if they reached the page unescaped.
HOSTILE_CLASS = "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','class')\">"
HOSTILE_FILE = "q\"uote's <b onmouseover=alert(1)>.jpg"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny synthetic run (report written at the end by detkit.train)."""
    import detkit

    tmp = tmp_path_factory.mktemp("tiny")
    from tests.engine.conftest import tiny_overrides

    detkit.train(load_config(None, tiny_overrides(tmp, **{"train.epochs": 2})), quiet=True, log=lambda *_: None)
    return tmp / "run"


def write_hostile_run(root: Path, *, num_images: int = 3, relative: bool = False) -> Path:
    """A run folder written by hand (no training): a COCO validation set of ``num_images`` images whose
    first file name and first class name are hostile, with config.yaml, setup.json, eval.json and
    detections.json (one true positive, one background false positive and one missed object per image).
    ``relative``: config.yaml names the data relative to ``root``, which setup.json records as the run's
    starting folder (as a run started in ``root`` does)."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    classes = [HOSTILE_CLASS, "plain"]
    images, annotations, results = [], [], []
    rng = np.random.default_rng(0)
    for i in range(num_images):
        name = HOSTILE_FILE if i == 0 else f"image_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(img_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": 160, "height": 120})
        annotations += [{"id": 2 * i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                         "area": 1600, "iscrowd": 0},
                        {"id": 2 * i + 2, "image_id": i + 1, "category_id": 2, "bbox": [90, 50, 50, 50],
                         "area": 2500, "iscrowd": 0}]
        results += [{"image_id": i + 1, "category_id": 1, "bbox": [11, 10, 40, 40], "score": 0.9, "file_name": name},
                    {"image_id": i + 1, "category_id": 2, "bbox": [0, 80, 20, 20], "score": 0.6 - 0.1 * i,
                     "file_name": name}]
    ann_file = root / "val.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": classes[0]}, {"id": 2, "name": classes[1]}]}))
    run = root / "run"
    run.mkdir()
    if relative:
        ann_file, img_dir = ann_file.relative_to(root), img_dir.relative_to(root)
    cfg = load_config(None, ["data.format=coco", f"data.train.ann_file={ann_file}", f"data.train.img_dir={img_dir}",
                             f"data.val.ann_file={ann_file}", f"data.val.img_dir={img_dir}", f"output.dir={run}"])
    save_config(cfg, str(run / "config.yaml"))
    (run / "setup.json").write_text(json.dumps({"data": {"format": "coco", "classes": classes,
                                                         "train": {"name": HOSTILE_FILE, "images": num_images,
                                                                   "boxes": 2 * num_images, "report": {}},
                                                         "val": {"name": "val", "images": num_images,
                                                                 "boxes": 2 * num_images, "report": {}}},
                                                "device": "cpu: test", "precision": {"train": "fp32", "eval": "fp32"},
                                                "cwd": str(root)}))
    per_class = {classes[0]: {"AP": 0.5, "AP50": 1.0}, classes[1]: {"AP": 0.0, "AP50": 0.0}}
    (run / "eval.json").write_text(json.dumps({"coco": {"mAP": 0.25}, "per_class": per_class}))
    (run / "detections.json").write_text(json.dumps(results))
    return run
