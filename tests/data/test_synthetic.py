"""detkit/data/synthetic.py: determinism, cache reuse / regeneration, box and label validity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import tiny_synthetic_config

from detkit.config import SyntheticConfig
from detkit.data.coco import COCODataset
from detkit.data.formats import build_dataset
from detkit.data.synthetic import SYNTHETIC_CLASSES, prepare_synthetic, render_image, synthetic_cache_dir
from detkit.errors import ConfigError


def _tiny(cache, **kw) -> SyntheticConfig:
    return tiny_synthetic_config(cache, **kw).data.synthetic


def _all_bytes(paths) -> dict:
    out = {}
    for split, (json_path, img_dir) in paths.items():
        out[split + ".json"] = Path(json_path).read_bytes()
        for name in sorted(os.listdir(img_dir)):
            out[f"{split}/{name}"] = Path(img_dir, name).read_bytes()
    return out


def test_same_seed_gives_identical_files(tmp_path):
    a = _all_bytes(prepare_synthetic(_tiny(tmp_path / "a")))
    b = _all_bytes(prepare_synthetic(_tiny(tmp_path / "b")))
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    assert any(k.endswith(".png") for k in a)


def test_different_seed_differs(tmp_path):
    a = _all_bytes(prepare_synthetic(_tiny(tmp_path, seed=0)))
    b = _all_bytes(prepare_synthetic(_tiny(tmp_path, seed=1)))
    assert a["train.json"] != b["train.json"]
    assert a["train/train_000000.png"] != b["train/train_000000.png"]


def test_boxes_inside_non_degenerate_labels_in_range_and_some_empty(tmp_path):
    cfg = _tiny(tmp_path, num_train=12, num_val=4)
    json_path, _ = prepare_synthetic(cfg)["train"]
    data = json.loads(Path(json_path).read_text())
    assert [c["name"] for c in data["categories"]] == SYNTHETIC_CLASSES
    size = cfg.image_size
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= size + 1e-6 and y + h <= size + 1e-6
        assert 1 <= ann["category_id"] <= len(SYNTHETIC_CLASSES)
        assert ann["iscrowd"] == 0
    with_boxes = {a["image_id"] for a in data["annotations"]}
    empty = [im for im in data["images"] if im["id"] not in with_boxes]
    assert len(empty) == round(0.25 * 12)
    assert len(with_boxes) > 0


def test_render_image_sizes_and_classes_vary():
    sizes, labels = [], []
    for i in range(40):
        image, boxes, lab = render_image(np.random.default_rng(i), image_size=128, num_objects=4)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        sizes += np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
        labels += lab.tolist()
    assert min(sizes) < 20 and max(sizes) > 48  # ~12 px .. half the image
    assert set(labels) == {1, 2, 3}


def test_objects_contrast_with_background():
    image, boxes, _ = render_image(np.random.default_rng(3), image_size=128, num_objects=1)
    x1, y1, x2, y2 = boxes[0]
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
    centre = image[cy, cx].astype(float)  # the centre of every shape is inside it
    corner = image[0, 0].astype(float) if (x1 > 2 or y1 > 2) else image[-1, -1].astype(float)
    assert np.linalg.norm(centre - corner) > 30


def test_cache_reused_and_half_written_cache_regenerated(tmp_path):
    cfg = _tiny(tmp_path)
    paths = prepare_synthetic(cfg)
    folder = synthetic_cache_dir(cfg)
    marker = Path(folder, "COMPLETE")
    mtime = os.stat(paths["train"][0]).st_mtime_ns
    assert prepare_synthetic(cfg) == paths
    assert os.stat(paths["train"][0]).st_mtime_ns == mtime  # reused, not rewritten
    before = Path(paths["train"][0]).read_bytes()
    marker.unlink()  # as if generation had stopped half way
    os.remove(os.path.join(paths["val"][1], sorted(os.listdir(paths["val"][1]))[0]))
    prepare_synthetic(cfg)
    assert marker.exists() and len(os.listdir(paths["val"][1])) == cfg.num_val
    assert Path(paths["train"][0]).read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_different_parameters_use_another_folder(tmp_path):
    a = synthetic_cache_dir(_tiny(tmp_path))
    b = synthetic_cache_dir(_tiny(tmp_path, num_train=7))
    assert a != b


def test_class_subset_and_invalid_classes(tmp_path):
    paths = prepare_synthetic(_tiny(tmp_path), ["triangle", "circle"])
    ds = COCODataset(ann_file=paths["train"][0], img_dir=paths["train"][1], log_report=False)
    assert ds.classes == ["triangle", "circle"]
    with pytest.raises(ConfigError, match="hexagon"):
        prepare_synthetic(_tiny(tmp_path), ["hexagon"])


def test_build_dataset_reads_synthetic_through_coco(tmp_path):
    cfg = tiny_synthetic_config(tmp_path)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train, COCODataset)
    assert (len(train), len(val)) == (6, 4)
    assert train.classes == SYNTHETIC_CLASSES and train.category_ids == [1, 2, 3]
    sample = train[0]
    assert sample["image"].shape == (64, 64, 3) and sample["image"].dtype == np.uint8
    assert not train.report  # a clean set needs no fixes
